//! The kernels layer: slices and arrays in, slices and arrays out — no `Var`, no tape.
//!
//! The differentiable ops of this crate call down into it; it never calls up. It holds every
//! loop whose speed matters:
//!
//! | module | what |
//! |---|---|
//! | [`gemm`] | the one GEMM entry point, choosing by shape between the row kernels, the packed kernel and matrixmultiply |
//! | [`rows`] | few-row products (dot products against the rows of a weight, row updates) |
//! | [`packed`] | a weight packed once into column panels, and its AVX-512 and AVX2 tiles |
//! | [`deep`] | a weight's gradient over a sequence's rows (`aᵀ·b`, `K` deep), on the AVX-512 tile |
//! | [`gates`] | the fused pointwise gate loops of the LSTM, GRU, Elman and sLSTM cells |
//! | [`cache`] | the core's L1d and L2 sizes, read once at run time (the packed kernel's block sizes follow them) |
//! | [`activations`] | the fast `tanh` and sigmoid, one value or a slice at a time; `exp` and `logsigmoid` |
//! | [`pointwise`] | a user's pointwise math ([`pointwise::Pointwise`]) over rows, and its vector–Jacobian product from dual numbers |
//! | [`mlstm`] | one step of the mLSTM matrix memory, forward and backward |
//! | [`scan`] | the linear-recurrence scan and its log-space form, split by lanes or chunked over time |
//! | [`gated_scan`] | minGRU's recurrence fused with its gate, read straight from the input projection |
//! | `split` | batch-1 LSTM inference with the hidden units split between two threads |
//! | `steps` | the order of a sequence's steps, forwards or reversed |
//!
//! # Instruction sets, chosen at run time
//! eddy is built as a plain dependency, with no `-C target-cpu`: the code an ordinary build
//! produces must run on any x86-64 and on aarch64, yet use AVX-512 or AVX2+FMA where the CPU has
//! them. So each hot kernel is compiled once per [`Level`] (a `#[target_feature]` copy of the
//! same generic body, see `multiversion!`), and the level is chosen once, at first use, from
//! what the CPU reports ([`level`]). The environment variable `EDDY_KERNELS` (`avx512`, `avx2`
//! or `portable`) forces a level — lower than the CPU's, or equal — so that the tests run
//! every path on one machine.
//!
//! The build feature `portable-only` removes every `std::arch` path, leaving the code that an
//! aarch64 (or any non-x86) build compiles; CI tests it on x86-64.
//!
//! # Threads
//! Kernels that split work (large products, the packed kernel, batch-1 inference) split it
//! across the rayon pool they are called from: `rayon::current_num_threads()`, which is the
//! global pool (sized by `RAYON_NUM_THREADS`, or all cores) unless the caller runs inside its
//! own `ThreadPool::install`. For a given thread count results are deterministic; across thread
//! counts they differ only by the order of floating-point sums.

pub mod activations;
pub mod cache;
pub mod deep;
pub(crate) mod fresh;
pub mod gated_scan;
pub mod gates;
pub mod gemm;
pub mod mlstm;
pub mod packed;
pub mod pointwise;
pub mod rows;
pub mod scan;
pub(crate) mod shared;
pub(crate) mod split;
pub(crate) mod steps;

use std::sync::OnceLock;

/// An instruction-set level the kernels are compiled for, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Plain Rust, vectorised by the compiler for the build's baseline (SSE2 on x86-64, NEON on
    /// aarch64). Always available.
    Portable,
    /// x86-64 with AVX2 and FMA (256-bit vectors, fused multiply-add): Haswell, Zen 1 and later.
    Avx2,
    /// x86-64 with AVX-512F (and AVX2, FMA): Skylake-SP, Ice Lake, Zen 4 and later.
    Avx512,
}

impl Level {
    /// Every level, lowest first.
    pub const ALL: [Level; 3] = [Level::Portable, Level::Avx2, Level::Avx512];

    /// The name `EDDY_KERNELS` takes for this level.
    pub fn name(self) -> &'static str {
        match self {
            Level::Portable => "portable",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
        }
    }

    /// The level named `name` (as `EDDY_KERNELS` spells it), if there is one.
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.name() == name)
    }

    /// Whether this CPU (and this build) can run the level's kernels.
    pub fn is_available(self) -> bool {
        self <= detected()
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the kernel level could not be chosen: `EDDY_KERNELS` names no level, or one this CPU
/// lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LevelError {
    /// The variable names no level.
    #[error("EDDY_KERNELS={0:?} is not a kernel level: use avx512, avx2 or portable (or leave it unset for the best this CPU has)")]
    Unknown(String),
    /// The variable names a level above what the CPU (or the build) supports.
    #[error("EDDY_KERNELS={asked} asks for a kernel level this CPU lacks: it supports up to {detected}")]
    Unavailable {
        /// The level asked for.
        asked: Level,
        /// The best level the CPU supports.
        detected: Level,
    },
}

/// The best level this CPU and build support, ignoring `EDDY_KERNELS`.
pub fn detected() -> Level {
    static DETECTED: OnceLock<Level> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
fn detect() -> Level {
    use std::arch::is_x86_feature_detected as has;
    if has!("avx512f") && has!("avx2") && has!("fma") {
        Level::Avx512
    } else if has!("avx2") && has!("fma") {
        Level::Avx2
    } else {
        Level::Portable
    }
}

#[cfg(not(all(target_arch = "x86_64", not(feature = "portable-only"))))]
fn detect() -> Level {
    Level::Portable
}

/// The level from `EDDY_KERNELS` (unset or empty: the best detected).
pub fn try_level() -> Result<Level, LevelError> {
    static CHOSEN: OnceLock<Result<Level, LevelError>> = OnceLock::new();
    CHOSEN
        .get_or_init(|| choose(std::env::var("EDDY_KERNELS").ok().as_deref(), detected()))
        .clone()
}

/// The level for `EDDY_KERNELS = var` on a CPU whose best level is `detected`.
fn choose(var: Option<&str>, detected: Level) -> Result<Level, LevelError> {
    match var.map(str::trim) {
        None | Some("") => Ok(detected),
        Some(name) => {
            let asked = Level::from_name(&name.to_ascii_lowercase())
                .ok_or_else(|| LevelError::Unknown(name.into()))?;
            if asked <= detected {
                Ok(asked)
            } else {
                Err(LevelError::Unavailable { asked, detected })
            }
        }
    }
}

/// The level every dispatched kernel runs at: chosen once, at first use, as [`try_level`].
///
/// # Panics
/// If `EDDY_KERNELS` is set to something other than a level this CPU supports; the message
/// says what it holds and what it may hold. (A misspelt override must not silently measure or
/// test the wrong kernels.) Call [`try_level`] first to handle that as an error.
pub fn level() -> Level {
    match try_level() {
        Ok(level) => level,
        Err(e) => panic!("{e}"),
    }
}

/// Whether the `std::arch` paths are compiled in (x86-64 without the `portable-only` feature).
pub(crate) const X86: bool = cfg!(all(target_arch = "x86_64", not(feature = "portable-only")));

/// Whether the portable level may use `mul_add` (a single instruction where the baseline has
/// fused multiply-add: aarch64; on x86-64 without FMA it would be a libm call per element).
pub(crate) const PORTABLE_FMA: bool = cfg!(target_arch = "aarch64");

/// `a·b + c`: fused where `FMA` (the instruction is there), else a multiply and an add.
#[inline(always)]
pub(crate) fn madd<F: eddy_tape::Float, const FMA: bool>(a: F, b: F, c: F) -> F {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Defines a kernel compiled once per [`Level`] and dispatched on [`level`] at each call.
///
/// The input is a function with generics `<F: Float, const FMA: bool>`; the output is the same
/// function with generics `<F: Float>` whose body runs one of three copies of the original: one
/// in a `#[target_feature(enable = "avx512f,avx2,fma")]` function, one with `"avx2,fma"`, and
/// a plain one (with `FMA` set to [`PORTABLE_FMA`]). The body should call only `#[inline(always)]`
/// helpers (and [`madd`] for multiply-adds), so that all of it is compiled for the level. The
/// cost of the dispatch is one load and a branch per call: call it per row or per product, not
/// per element.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        $vis:vis fn $name:ident<F: Float, const FMA: bool>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block
    ) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<F: Float>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<F: Float, const FMA: bool>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
            #[target_feature(enable = "avx512f,avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx512<F: Float>($($arg: $ty),*) $(-> $ret)? {
                body::<F, true>($($arg),*)
            }

            #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            fn avx2<F: Float>($($arg: $ty),*) $(-> $ret)? {
                body::<F, true>($($arg),*)
            }

            match $crate::kernels::level() {
                #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
                // SAFETY: the level is at most what the CPU supports (`kernels::level`).
                $crate::kernels::Level::Avx512 => unsafe { avx512::<F>($($arg),*) },
                #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
                // SAFETY: as above.
                $crate::kernels::Level::Avx2 => unsafe { avx2::<F>($($arg),*) },
                _ => body::<F, { $crate::kernels::PORTABLE_FMA }>($($arg),*),
            }
        }
    };
}
pub(crate) use multiversion;

/// A `[rows, cols]` test matrix of smooth values in `[-1, 1]` (a sine of the index), different
/// for each `seed`; the operands of the crate's product tests.
#[cfg(test)]
pub(crate) fn test_matrix<F: eddy_tape::Float>(rows: usize, cols: usize, seed: f64) -> ndarray::Array2<F> {
    ndarray::Array2::from_shape_fn((rows, cols), |(i, j)| {
        F::of(((i * 7 + j * 3) as f64 * 0.37 + seed).sin())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_picks_a_level_at_or_below_the_cpu_and_names_its_mistakes() {
        assert_eq!(choose(None, Level::Avx2), Ok(Level::Avx2));
        assert_eq!(choose(Some(""), Level::Avx512), Ok(Level::Avx512));
        assert_eq!(choose(Some("portable"), Level::Avx512), Ok(Level::Portable));
        assert_eq!(choose(Some("AVX2"), Level::Avx512), Ok(Level::Avx2));
        assert_eq!(
            choose(Some("avx512"), Level::Avx2),
            Err(LevelError::Unavailable {
                asked: Level::Avx512,
                detected: Level::Avx2
            })
        );
        let e = choose(Some("sse9"), Level::Avx2).unwrap_err();
        assert_eq!(e, LevelError::Unknown("sse9".into()));
        assert!(e.to_string().contains("avx512, avx2 or portable"), "{e}");
    }

    #[test]
    fn the_chosen_level_is_one_the_cpu_has() {
        let level = level();
        assert!(level.is_available() && level <= detected());
        if let Ok(var) = std::env::var("EDDY_KERNELS") {
            if !var.is_empty() {
                assert_eq!(level.name(), var.to_ascii_lowercase());
            }
        }
        println!("kernel level {level} (detected {})", detected());
    }
}
