//! A weight matrix packed once for the many products of a sequence.
//!
//! A recurrent layer multiplies the same `W_hh` by a new `[B, H]` state at every step, forward
//! and backward. matrixmultiply packs both operands on every call: at W4's size that is a
//! 16 MiB weight copied twice per step. Here the weight is packed once per sequence into
//! column panels, and a tile kernel streams the panels past blocks of rows of the state: an
//! AVX-512 tile (`8 × NR` in 16 registers of 16 lanes) or an AVX2+FMA tile (`6 × NR` as two
//! `6 × 16` sub-tiles of 12 registers of 8 lanes), as [`super::level`] says. At the portable
//! level, or for `f64`, the products go through [`super::gemm::gemm`] on the unpacked weight.

use super::Level;
use eddy_tape::Float;
use ndarray::{Array2, ArrayView2, ArrayViewMut2};
use std::any::TypeId;
use std::ops::Range;

/// Rows of the state per block at the AVX-512 level: `8 × NR` in 16 accumulators.
pub(super) const MR_AVX512: usize = 8;
/// Rows of the state per block at the AVX2 level: each `6 × 16` half of the block takes 12 of
/// the 16 registers as accumulators, enough independent FMAs to cover their latency on two FMA
/// ports with slack (a `4 × 16` sub-tile's 8 only just do: its best rates were up to 22% lower
/// on Zen 3, docs/performance.md).
const MR_AVX2: usize = 6;
/// From this depth `K` of `a` (its rows `4·K` bytes apart), with at least [`PACK_A_MIN_N`]
/// columns of `B`, the AVX-512 path copies each block of `a`'s rows into the order the tile
/// reads them ([`interleave_rows`]) before the panels pass: read in place, the block's eight
/// row streams lie a multiple of 2 KiB apart and share L1 sets. Measured on an Intel Xeon in
/// alternating runs (docs/performance.md, 2026-12-02): W4's products (`K` 512, 1024) 4–10%
/// faster; at `K` ≤ 256 (W1's, W2's, W5's) level or slower by the copy.
const PACK_A_MIN_K: usize = 512;
/// See [`PACK_A_MIN_K`]: 16 panels share each copied block.
const PACK_A_MIN_N: usize = 512;

/// `KC` slices of a panel per tile call on the transposed path ([`Job::run_transposed`]): the
/// tile loads and stores its block of `c` once per call, and beside a panel's slice the
/// chunk's blocks of `c` (`C_ROWS × NR`, as large as L1) do not stay in L1, so a longer call
/// (its slice of the panel twice L1, streamed from L2) moves them a quarter as often.
/// Measured on a Zen 4 in alternating runs (docs/performance.md, 2026-12-03): W4's weight
/// gradient `4096x3136*3136x1024` at 89–91 GFLOP/s against 85–87 with one slice per call.
const TRANSPOSED_TILE_KC: usize = 4;

/// Columns of the weight per panel: two 512-bit registers of f32.
pub(super) const NR: usize = 32;
/// The packed kernel's block sizes, derived from the core's caches ([`super::cache`]) so that
/// a product is blocked for the core it runs on. On a Zen 4 core (32 KiB L1d, 1 MiB L2) they
/// are the sizes measured best there (docs/performance.md): `KC` 128 (256 for the AVX-512
/// tile), `C_ROWS` 256, `A_CHUNK` 64 KiB, `A_WHOLE` 512 KiB, `SMALL_B` 1 MiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocking {
    /// `KC`: rows of a panel multiplied at a time; `KC·NR` f32 fill half of L1 while the
    /// blocks of `a` pass them.
    kc: usize,
    /// `KC` for the AVX-512 tile: a slice that fills L1 (twice `kc`), so each tile of `c` is
    /// loaded and stored half as often. Measured on a Zen 4 in four alternating rounds of
    /// `eddy-bench gemm` (docs/performance.md, 2026-12-03): W2's step products (forward and
    /// backward), W4's step and W4's projection faster in 14 of 16 pairs; whole workloads within
    /// the VM's spread.
    kc_avx512: usize,
    /// `C_ROWS`: rows of `c` at the most in one pass of the panels; their tiles
    /// (`C_ROWS·NR` f32) fill L1.
    c_rows: usize,
    /// `A_CHUNK`: bytes of `a` taken at a time by a product with many rows, a sixteenth of L2
    /// (measured best at W2's and W4's input projections among 64 KiB, 256 KiB and all of `a`
    /// on a 1 MiB L2).
    a_chunk: usize,
    /// `A_WHOLE`: up to this many bytes `a` is not cut into chunks (half of L2).
    a_whole: usize,
    /// `SMALL_B`: a `b` of up to this many bytes (all of L2) stays in cache while `a` streams
    /// past it.
    small_b: usize,
}

impl Blocking {
    /// The block sizes for a core with `caches`.
    pub(crate) fn for_caches(caches: super::cache::Caches) -> Blocking {
        let row = NR * 4;
        Blocking {
            kc: (caches.l1d / 2 / row / 16 * 16).max(16),
            kc_avx512: (caches.l1d / row / 16 * 16).max(16),
            c_rows: (caches.l1d / row).max(MR_AVX512),
            a_chunk: caches.l2 / 16,
            a_whole: caches.l2 / 2,
            small_b: caches.l2,
        }
    }

    /// This machine's (from [`super::cache::caches`], computed once).
    pub(crate) fn here() -> Blocking {
        static HERE: std::sync::OnceLock<Blocking> = std::sync::OnceLock::new();
        *HERE.get_or_init(|| Blocking::for_caches(super::cache::caches()))
    }
}

/// Up to this many bytes a weight `b` fits in this core's cache (its L2) while `a` streams past
/// it: the packed kernel takes products by such weights.
pub(crate) fn small_b() -> usize {
    Blocking::here().small_b
}

/// Rows of the state per block of the tile at `level` (AVX2 or AVX-512) for a product of `m`
/// rows. At AVX2, a small product whose last block would hold 1 or 2 rows (a batch of 32 is
/// five blocks of 6 and one of 2) takes blocks of 4 instead: a 1- or 2-row sub-tile has too
/// few accumulators to cover the FMA latency, and with 4-row blocks every one has 8 (W1's and
/// W5's step products ran 6% slower on 6-row blocks).
fn block_rows(level: Level, m: usize) -> usize {
    match level {
        Level::Avx512 => MR_AVX512,
        _ if m < 8 * MR_AVX2 && matches!(m % MR_AVX2, 1 | 2) => 4,
        _ => MR_AVX2,
    }
}

/// `B` (`[K, N]`) ready for `c = a·B` with many `a`: packed in `f32` column panels of `NR`
/// (panel `p` holds columns `p·NR ..` as `K` consecutive rows of `NR`, the last one
/// zero-padded) when the AVX-512 kernel can run, else kept as a row-major copy.
#[derive(Debug, Clone)]
pub struct PackedMatrix<F> {
    k: usize,
    n: usize,
    form: Form<F>,
}

#[derive(Debug, Clone)]
enum Form<F> {
    /// The panels, and the level whose tile multiplies by them.
    Panels(Vec<f32>, Level),
    Plain(Array2<F>),
}

/// Whether the packed kernel runs for element type `F` at the chosen kernel level (`f32` at
/// the AVX2 or AVX-512 level).
pub fn packed_kernel_available<F: Float>() -> bool {
    TypeId::of::<F>() == TypeId::of::<f32>() && super::X86 && super::level() >= Level::Avx2
}

impl<F: Float> PackedMatrix<F> {
    /// Packs `b` (any strides: pass `w.t()` to multiply by `wᵀ`).
    pub fn new(b: &ArrayView2<F>) -> Self {
        Self::new_at(b, super::level())
    }

    /// Packs `b` for the tile of `level` (the plain form below AVX2, for `f64`, or for a level
    /// the CPU lacks): what the tests use to run every tile the CPU has.
    pub fn new_at(b: &ArrayView2<F>, level: Level) -> Self {
        let (k, n) = b.dim();
        let tiles = TypeId::of::<F>() == TypeId::of::<f32>() && super::X86 && level >= Level::Avx2;
        if !(tiles && level.is_available()) {
            return PackedMatrix {
                k,
                n,
                form: Form::Plain(b.as_standard_layout().into_owned()),
            };
        }
        let panels = n.div_ceil(NR);
        let mut data = vec![0f32; panels * k * NR];
        let f = |v: &F| v.as_f64() as f32;
        let wt = b.t();
        if let (Some(w), true) = (wt.as_slice(), n > 1) {
            // `b = wᵀ` of a row-major `w` `[n, k]`: a transpose, `KB` rows of a panel at a time
            // (8 KiB, in L1 while its columns are written from `NR` rows of `w`).
            const KB: usize = 64;
            for (p, panel) in data.chunks_exact_mut((k * NR).max(1)).enumerate().take(panels) {
                for k0 in (0..k).step_by(KB) {
                    let k1 = (k0 + KB).min(k);
                    for j in 0..NR.min(n - p * NR) {
                        let row = &w[(p * NR + j) * k + k0..(p * NR + j) * k + k1];
                        for (i, v) in row.iter().enumerate() {
                            panel[(k0 + i) * NR + j] = f(v);
                        }
                    }
                }
            }
        } else if let Some(rows) = b.as_slice().and_then(as_f32) {
            // Row-major `f32` (a sequence's inputs, for a weight's gradient): each row's `NR`
            // columns of a panel copied as one piece.
            for (kk, row) in rows.chunks_exact(n.max(1)).enumerate() {
                for (p, piece) in row.chunks(NR).enumerate() {
                    data[p * k * NR + kk * NR..][..piece.len()].copy_from_slice(piece);
                }
            }
        } else {
            // Rows read in order, each split across the panels.
            for (kk, row) in b.rows().into_iter().enumerate() {
                for (col, v) in row.iter().enumerate() {
                    data[(col / NR) * k * NR + kk * NR + col % NR] = f(v);
                }
            }
        }
        PackedMatrix {
            k,
            n,
            form: Form::Panels(data, level),
        }
    }

    /// `(K, N)`.
    pub fn dim(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// `a·B` as a new `[M, N]` array, for `a` `[M, K]` in any layout.
    pub fn product(&self, a: &ndarray::ArrayD<F>) -> ndarray::ArrayD<F> {
        let a = a.as_standard_layout();
        let (m, n) = (a.shape()[0], self.n);
        let a = a.as_slice().expect("standard layout");
        // SAFETY: `mul_into` without `accumulate` writes every element of `c` and reads none
        // first: the plain form is `gemm` with `β = 0` (see `fresh::product_vec`); the panels
        // store each tile's first `KC` slice without loading `c`, and clear `c` when `K = 0`.
        let out = unsafe { super::fresh::written_by(m * n, |c| self.mul_into(a, c, false)) };
        ndarray::ArrayD::from_shape_vec(vec![m, n], out).expect("[m, n]")
    }

    /// `c = a·B`, or `c += a·B` when `accumulate`, for `a` row-major `[M, K]` and `c` row-major
    /// `[M, N]`.
    ///
    /// # Panics
    /// If the lengths of `a` and `c` are not `M·K` and `M·N` for one `M`.
    pub fn mul_into(&self, a: &[F], c: &mut [F], accumulate: bool) {
        self.mul(a, c, accumulate, None, Blocking::here())
    }

    /// `c = bias + a·B`, `bias` (`[N]`) added to every row, for `a` row-major `[M, K]` and `c`
    /// row-major `[M, N]`: every element of `c` written, none read first. The tile adds the
    /// bias as it stores its first sums, so `c` is not first filled with copies of it (a
    /// `Linear` layer's output, one pass over memory fewer).
    ///
    /// # Panics
    /// As [`PackedMatrix::mul_into`], or if `bias` is not `N` long.
    pub fn mul_into_bias(&self, a: &[F], c: &mut [F], bias: &[F]) {
        assert_eq!(bias.len(), self.n, "the bias is [N]");
        self.mul(a, c, false, Some(bias), Blocking::here())
    }

    /// `c = aᵀ·B`, or `c += aᵀ·B` when `accumulate`, for `at` (`aᵀ`) row-major `[K, M]` and `c`
    /// row-major `[M, N]`: a weight's gradient `gᵀ·x` over many rows, with `g` read where it
    /// is. Runs only on panels for the AVX-512 tile (blocked by rows of `c` and slices of the
    /// depth, each slice copied out of `aᵀ` into the tile's reading order); returns
    /// whether it ran.
    ///
    /// # Panics
    /// If the lengths of `at` and `c` are not `K·M` and `M·N` for one `M`.
    pub fn mul_transposed_into(&self, at: &[F], c: &mut [F], accumulate: bool) -> bool {
        let (k, n) = (self.k, self.n);
        let Form::Panels(panels, Level::Avx512) = &self.form else {
            return false;
        };
        let m = at.len().checked_div(k).unwrap_or(c.len() / n.max(1));
        assert!(
            at.len() == m * k && c.len() == m * n,
            "aᵀ is [K, M] and c is [M, N]"
        );
        if m == 0 || n == 0 {
            return true;
        }
        if k == 0 {
            if !accumulate {
                c.fill(F::zero());
            }
            return true;
        }
        let (at, c) = (as_f32(at), as_f32_mut(c));
        let (at, c) = (at.expect(PANELS_ARE_F32), c.expect(PANELS_ARE_F32));
        let out = Output {
            ptr: c.as_mut_ptr(),
            len: c.len(),
        };
        let mr = block_rows(Level::Avx512, m);
        let job = Job {
            level: Level::Avx512,
            panels,
            a: at,
            transposed: true,
            tail: &[],
            out: &out,
            dims: (m, k, n),
            mr,
            accumulate,
            bias: None,
            blocking: Blocking::here(),
        };
        job.run_all();
        true
    }

    /// `c (+)= a·B`, or `c = bias + a·B` (then `accumulate` is false), the panels blocked by
    /// `blocking`.
    fn mul(&self, a: &[F], c: &mut [F], accumulate: bool, bias: Option<&[F]>, blocking: Blocking) {
        let (k, n) = (self.k, self.n);
        let m = a.len().checked_div(k).unwrap_or(c.len() / n.max(1));
        assert!(
            a.len() == m * k && c.len() == m * n,
            "a is [M, K] and c is [M, N]"
        );
        match &self.form {
            Form::Plain(b) => {
                let a = ArrayView2::from_shape((m, k), a).expect("[M, K]");
                if let Some(bias) = bias {
                    for row in c.chunks_exact_mut(n.max(1)) {
                        row.copy_from_slice(bias);
                    }
                }
                let mut c = ArrayViewMut2::from_shape((m, n), c).expect("[M, N]");
                let beta = if accumulate || bias.is_some() {
                    F::one()
                } else {
                    F::zero()
                };
                super::gemm::gemm_unchecked(F::one(), &a, &b.view(), beta, &mut c);
            }
            Form::Panels(panels, level) => {
                let (a, c) = (
                    as_f32(a).expect(PANELS_ARE_F32),
                    as_f32_mut(c).expect(PANELS_ARE_F32),
                );
                let bias = bias.map(|b| as_f32(b).expect(PANELS_ARE_F32));
                mul_panels(*level, panels, a, c, (m, k, n), accumulate, bias, blocking);
            }
        }
    }
}

/// `c (+)= a·B` (or `c = bias + a·B`) with `B` in panels: for each panel, `KC` of its rows at a time (in L1), every
/// block of [`block_rows`] rows of `a`, read where it is (row-major, `k` apart; a ragged last block from
/// a zero-padded copy) or, at AVX-512 for a deep `a` ([`PACK_A_MIN_K`]), from a copy interleaved per block. A product of at least 2²² multiply-adds splits its panels across the current rayon
/// pool's threads.
#[allow(clippy::too_many_arguments)]
fn mul_panels(
    level: Level,
    panels: &[f32],
    a: &[f32],
    c: &mut [f32],
    (m, k, n): (usize, usize, usize),
    accumulate: bool,
    bias: Option<&[f32]>,
    blocking: Blocking,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        match bias {
            Some(bias) => c.chunks_exact_mut(n).for_each(|row| row.copy_from_slice(bias)),
            None if !accumulate => c.fill(0.0),
            None => {}
        }
        return;
    }
    let mr = block_rows(level, m);
    let full = m / mr * mr;
    let mut tail = vec![0f32; if full < m { mr * k } else { 0 }];
    tail[..(m - full) * k].copy_from_slice(&a[full * k..]);
    let out = Output {
        ptr: c.as_mut_ptr(),
        len: c.len(),
    };
    let job = Job {
        level,
        panels,
        a,
        transposed: false,
        tail: &tail,
        out: &out,
        dims: (m, k, n),
        mr,
        accumulate,
        bias,
        blocking,
    };
    job.run_all();
}

/// `c`, written by the tasks in disjoint tiles (column ranges of panels × row ranges of blocks).
struct Output {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: every task writes only its own tiles: the columns of its panels in the rows of its
// blocks (see `Job::run`).
unsafe impl Sync for Output {}

/// One product in panels, for one or several threads.
struct Job<'a> {
    /// Which tile runs (AVX2 or AVX-512; the panels exist only at one of those).
    level: Level,
    panels: &'a [f32],
    /// `a`, row-major `[m, k]`, or when `transposed` its transpose, row-major `[k, m]`.
    a: &'a [f32],
    /// Whether `a` holds `aᵀ` ([`PackedMatrix::mul_transposed_into`]; AVX-512 only).
    transposed: bool,
    /// The last `m mod mr` rows of `a`, zero-padded to `mr` rows (empty if there are none).
    tail: &'a [f32],
    out: &'a Output,
    dims: (usize, usize, usize),
    /// Rows per block ([`block_rows`] of `level` and `m`).
    mr: usize,
    accumulate: bool,
    /// `[N]`, added to every row of `c` by the first `KC` slice (then `accumulate` is false).
    bias: Option<&'a [f32]>,
    blocking: Blocking,
}

/// What a tile's sums are stored onto. (Built, but read by no tile, where every `std::arch`
/// path is compiled out.)
#[derive(Clone, Copy)]
#[cfg_attr(
    not(all(target_arch = "x86_64", not(feature = "portable-only"))),
    allow(dead_code)
)]
pub(super) enum Onto {
    /// Nothing: the sums are stored as they are.
    Zero,
    /// What `c` holds.
    C,
    /// A row of biases (at the tile's first column), the same for every row.
    Bias(*const f32),
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
impl Onto {
    /// The same, `cols` columns to the right.
    ///
    /// # Safety
    /// A bias row must extend that far.
    unsafe fn right(self, cols: usize) -> Onto {
        match self {
            // SAFETY: the caller's.
            Onto::Bias(b) => Onto::Bias(unsafe { b.add(cols) }),
            other => other,
        }
    }
}

impl Job<'_> {
    /// Every tile: across the current rayon pool's threads for a product of at least
    /// [`PAR_MIN_PRODUCT`](crate::kernels::gemm::PAR_MIN_PRODUCT) multiply-adds, else on
    /// this one.
    fn run_all(&self) {
        let (m, k, n) = self.dims;
        let (panels, blocks) = (0..n.div_ceil(NR), 0..m.div_ceil(self.mr));
        let threads = rayon::current_num_threads();
        let parts = match m * k * n >= crate::kernels::gemm::PAR_MIN_PRODUCT {
            true => threads,
            false => 1,
        };
        self.run_split(panels, blocks, parts);
    }

    /// The tiles of `panels` × `blocks` across `parts` threads, halved recursively with
    /// `rayon::join` along whichever of the two has more (a step's product has many panels
    /// and few blocks of rows, an input projection the other way round).
    fn run_split(&self, panels: Range<usize>, blocks: Range<usize>, parts: usize) {
        if parts < 2 || (panels.len() < 2 && blocks.len() < 2) {
            return match self.transposed {
                true => self.run_transposed(panels, blocks),
                false => self.run(panels, blocks),
            };
        }
        let (left, right) = (parts / 2, parts - parts / 2);
        let half = |r: &Range<usize>| r.start + r.len() * left / parts;
        if panels.len() >= blocks.len() {
            let mid = half(&panels);
            rayon::join(
                || self.run_split(panels.start..mid, blocks.clone(), left),
                || self.run_split(mid..panels.end, blocks.clone(), right),
            );
        } else {
            let mid = half(&blocks);
            rayon::join(
                || self.run_split(panels.clone(), blocks.start..mid, left),
                || self.run_split(panels.clone(), mid..blocks.end, right),
            );
        }
    }

    /// [`Job::run`] for `a` given as `aᵀ` (a weight's gradient `gᵀ·x` over a sequence's rows:
    /// `k` deep, thousands of rows). The blocks of `rows` go `C_ROWS` rows at a time, and
    /// each such chunk `KB` steps of `k` at a time (`KB` a multiple of `KC` such that the
    /// chunk's slice takes half of L2): the slice is copied out of `aᵀ` into the tile's
    /// interleaved order (each step's 8 values are contiguous in `aᵀ`), and every panel passes
    /// it [`TRANSPOSED_TILE_KC`] `KC` slices at a time while the chunk's tiles of `c` stay in
    /// cache.
    fn run_transposed(&self, range: Range<usize>, rows: Range<usize>) {
        let ((m, k, n), mr, bl) = (self.dims, self.mr, self.blocking);
        let per_chunk = (bl.c_rows / mr).max(1);
        let kb = ((bl.a_whole / (4 * per_chunk * mr)) / bl.kc * bl.kc).max(bl.kc);
        let step = TRANSPOSED_TILE_KC * bl.kc;
        let mut packed: Vec<f32> = Vec::new();
        for b0 in rows.clone().step_by(per_chunk) {
            let chunk = b0..(b0 + per_chunk).min(rows.end);
            for k0 in (0..k).step_by(kb) {
                let depth = kb.min(k - k0);
                // The rows past `m` of a ragged last block stay zero (the tile computes them
                // and stores none).
                packed.clear();
                packed.resize(chunk.len() * mr * depth, 0.0);
                for kk in 0..depth {
                    let step = &self.a[(k0 + kk) * m..(k0 + kk + 1) * m];
                    for (j, bi) in chunk.clone().enumerate() {
                        let (r0, here) = (bi * mr, mr.min(m - bi * mr));
                        packed[(j * depth + kk) * mr..][..here].copy_from_slice(&step[r0..r0 + here]);
                    }
                }
                for p in range.clone() {
                    let panel = &self.panels[p * k * NR..(p + 1) * k * NR];
                    let (c0, cols) = (p * NR, NR.min(n - p * NR));
                    for s0 in (k0..k0 + depth).step_by(step) {
                        let kc = step.min(k0 + depth - s0);
                        let onto = match self.accumulate || s0 > 0 {
                            true => Onto::C,
                            false => Onto::Zero,
                        };
                        for (j, bi) in chunk.clone().enumerate() {
                            let here = mr.min(m - bi * mr);
                            let start = bi * mr * n + c0;
                            let len = (here - 1) * n + cols;
                            assert!(start + len <= self.out.len, "the block lies inside c");
                            let a = &packed[(j * depth + s0 - k0) * mr..];
                            // SAFETY: as in `run`; the transposed path runs only at AVX-512
                            // (`mul_transposed_into`), whose tile reads `a` interleaved (`lda`
                            // 0): `a` holds `mr·kc` elements from this slice's step `s0 − k0`,
                            // and the panel from row `s0` holds `kc·NR`.
                            unsafe {
                                let out = self.out.ptr.add(start);
                                tile(
                                    self.level,
                                    (kc, 0),
                                    a,
                                    &panel[s0 * NR..],
                                    out,
                                    n,
                                    here,
                                    cols,
                                    onto,
                                )
                            };
                        }
                    }
                }
            }
        }
    }

    /// The blocks of rows in `rows` times the panels in `range`, `KC` rows of a panel at a
    /// time.
    fn run(&self, range: Range<usize>, rows: Range<usize>) {
        let ((m, k, n), mr) = (self.dims, self.mr);
        let first = rows.start;
        let blocks: Vec<&[f32]> = self
            .a
            .chunks_exact(k * mr)
            .chain(self.tail.chunks_exact(k * mr))
            .skip(first)
            .take(rows.len())
            .collect();
        // A large `a` times a `b` that fits in cache: `a` in chunks of about `A_CHUNK` bytes,
        // each one in cache while every panel passes it. Otherwise `a` stays whole, so that the
        // panels stream past once (W4's 16 MiB `W_hh` past a step's state), up to `C_ROWS`
        // rows: their tiles of `c` stay in cache while the `KC` slices of a panel pass them.
        let bl = self.blocking;
        let per_chunk = match 4 * m * k > bl.a_whole && 4 * k * n <= bl.small_b {
            true => (bl.a_chunk / (4 * k * mr)).max(1),
            false => blocks.len().clamp(1, bl.c_rows / mr),
        };
        // At AVX-512, a deep `a` (rows at least `PACK_A_MIN_K` apart) times many panels is
        // first copied block by block into the order the tile reads it, each step's `MR`
        // values together: read in place, its rows' streams lie a multiple of 2 KiB apart and
        // share L1 sets.
        let pack = self.level == Level::Avx512 && k >= PACK_A_MIN_K && n >= PACK_A_MIN_N;
        let mut packed: Vec<f32> = Vec::new();
        let slice = match self.level {
            Level::Avx512 => bl.kc_avx512,
            _ => bl.kc,
        };
        for (ci, chunk) in blocks.chunks(per_chunk).enumerate() {
            if pack {
                packed.clear();
                for block in chunk {
                    interleave_rows(block, mr, k, &mut packed);
                }
            }
            for p in range.clone() {
                let panel = &self.panels[p * k * NR..(p + 1) * k * NR];
                let (c0, cols) = (p * NR, NR.min(n - p * NR));
                // `KC` rows of the panel at a time (`kc_avx512` at AVX-512), in L1 while the
                // chunk's blocks pass.
                for k0 in (0..k).step_by(slice) {
                    let kc = slice.min(k - k0);
                    let onto = match (self.accumulate || k0 > 0, self.bias) {
                        (true, _) => Onto::C,
                        // SAFETY (the pointer): c0 < N, the bias's length.
                        (false, Some(bias)) => Onto::Bias(unsafe { bias.as_ptr().add(c0) }),
                        (false, None) => Onto::Zero,
                    };
                    // At AVX2, the panel's next `KC` rows (the next panel's first, after its
                    // last) are asked into L2 while this slice's blocks pass, a share per
                    // block, so that the next slice's first block does not wait on L3.
                    let next = (p * k + k0 + kc) * NR;
                    let ahead = match self.level == Level::Avx2 && chunk.len() > 1 {
                        true => (kc * NR).min(self.panels.len().saturating_sub(next)),
                        false => 0,
                    };
                    for (i, block) in chunk.iter().enumerate() {
                        if ahead > 0 {
                            let (f0, f1) = (ahead * i / chunk.len(), ahead * (i + 1) / chunk.len());
                            prefetch_l2(&self.panels[next + f0..next + f1]);
                        }
                        let bi = first + ci * per_chunk + i;
                        let rows = mr.min(m - bi * mr);
                        let start = bi * mr * n + c0;
                        let len = (rows - 1) * n + cols;
                        assert!(start + len <= self.out.len, "the block lies inside c");
                        // SAFETY: the panels exist only at the AVX2 or AVX-512 level, which the
                        // CPU has (`PackedMatrix::new`, `super::level`); `block` (`mr` rows of
                        // `a` `k` apart, or the padded tail) from `k0` holds `(mr − 1)·k + kc`
                        // elements and `panel` from row `k0` holds `kc·NR`; `c` from `start`
                        // holds `len` (checked above). The tile reads and writes only columns
                        // c0 .. c0 + cols of its rows, a tile no other task touches (tasks split
                        // the panels or the blocks), and the tasks end before `mul_panels`
                        // returns. A bias from column c0 holds `cols` elements.
                        unsafe {
                            let out = self.out.ptr.add(start);
                            let b = &panel[k0 * NR..];
                            if pack {
                                let a = &packed[i * mr * k + k0 * mr..];
                                tile(self.level, (kc, 0), a, b, out, n, rows, cols, onto)
                            } else {
                                tile(self.level, (kc, k), &block[k0..], b, out, n, rows, cols, onto)
                            }
                        };
                    }
                }
            }
        }
    }
}

/// Asks the core to bring `s`'s cache lines into L2: a hint, which reads nothing (and is
/// nothing where every `std::arch` path is compiled out). Measured on a Zen 3 (512 KiB L2, a
/// weight streamed from L3), prefetching each panel's next `KC` slice: the packed step
/// products 4–11% faster over eight alternating rounds (docs/performance.md, 2026-12-02).
#[inline(always)]
fn prefetch_l2(s: &[f32]) {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
    for i in (0..s.len()).step_by(16) {
        // SAFETY: `i` < `s.len()`, so the address lies inside `s`; a prefetch reads nothing
        // and needs only SSE, which every x86-64 CPU has.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T1};
            _mm_prefetch::<_MM_HINT_T1>(s.as_ptr().add(i) as *const i8)
        };
    }
    #[cfg(not(all(target_arch = "x86_64", not(feature = "portable-only"))))]
    let _ = s;
}

/// Why a slice of `F` is one of `f32` wherever there are panels: they are made only for `f32`.
const PANELS_ARE_F32: &str = "panels exist only for f32";

/// `s` as the `f32` slice it is when `F` is `f32`, else `None`.
pub(super) fn as_f32<F: Float>(s: &[F]) -> Option<&[f32]> {
    // SAFETY: `F` is `f32` (checked), so the slice is the same memory with the same type.
    (TypeId::of::<F>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(s.as_ptr() as *const f32, s.len()) })
}

/// [`as_f32`] for a mutable slice.
pub(super) fn as_f32_mut<F: Float>(s: &mut [F]) -> Option<&mut [f32]> {
    // SAFETY: as in `as_f32`; the borrow of `s` is handed on.
    (TypeId::of::<F>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(s.as_mut_ptr() as *mut f32, s.len()) })
}

/// Appends `block` (`mr` rows of `k`, row-major) to `out` in the order the AVX-512 tile reads
/// an interleaved block: `out[kk·mr + r] = block[r·k + kk]`, each step's `mr` values together.
fn interleave_rows(block: &[f32], mr: usize, k: usize, out: &mut Vec<f32>) {
    out.reserve(mr * k);
    for kk in 0..k {
        out.extend((0..mr).map(|r| block[r * k + kk]));
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
mod avx512 {
    use super::{Onto, MR_AVX512 as MR, NR};
    use std::arch::x86_64::*;

    /// One `MR × NR` block over `k` rows of the panel: `c[r, j] (+)= Σ_kk a[r, kk] · b[kk, j]`
    /// for `rows` rows and `cols` columns of `c` (row stride `ldc`), with `a` the block's `MR`
    /// rows where they are (`lda` apart, `k` of each read: eight sequential streams) or, when
    /// `lda` is 0, interleaved by [`super::interleave_rows`] (`a[kk·MR + r]`: one stream). The
    /// sums are stored onto what `onto` says: nothing, `c`, or a bias row. A block of at most
    /// 16 columns (a ragged last panel: `N = 200` leaves 8) computes only the
    /// panel's first 16 lanes.
    ///
    /// # Safety
    /// AVX-512F must be available; `a` holds `(MR − 1)·lda + k` (interleaved: `MR·k`) and `b`
    /// `k·NR` elements; `c` points to
    /// `(rows − 1)·ldc + cols` elements of which the tile reads and writes only the first
    /// `cols` of each row (no other thread may access those meanwhile); a bias holds `cols`
    /// elements; `rows ≤ MR`, `cols ≤ NR`.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        k: (usize, usize),
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        onto: Onto,
    ) {
        let need_a = if k.1 == 0 { MR * k.0 } else { (MR - 1) * k.1 + k.0 };
        debug_assert!(a.len() >= need_a && b.len() >= k.0 * NR && rows <= MR && cols <= NR);
        // SAFETY: the caller's contract, passed on.
        unsafe {
            match (cols, k.1) {
                (..=16, 0) => tile_w::<1, true>(k, a, b, c, ldc, rows, cols, onto),
                (_, 0) => tile_w::<2, true>(k, a, b, c, ldc, rows, cols, onto),
                (..=16, _) => tile_w::<1, false>(k, a, b, c, ldc, rows, cols, onto),
                _ => tile_w::<2, false>(k, a, b, c, ldc, rows, cols, onto),
            }
        }
    }

    /// [`tile`] over the panel's first `W` 16-lane vectors (`cols ≤ 16·W`). Compiled for
    /// AVX-512F itself, so that each instance keeps its intrinsics inline (see the AVX2
    /// `sub_tile`).
    ///
    /// # Safety
    /// As [`tile`], with `cols ≤ 16·W`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_w<const W: usize, const PACKED: bool>(
        (k, lda): (usize, usize),
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        onto: Onto,
    ) {
        let mut acc = [[_mm512_setzero_ps(); W]; MR];
        let (ap, bp) = (a.as_ptr(), b.as_ptr());
        for kk in 0..k {
            // SAFETY: kk < k and w·16 + 16 ≤ NR, so the loads read inside `a` and `b`.
            let bv: [__m512; W] =
                std::array::from_fn(|w| unsafe { _mm512_loadu_ps(bp.add(kk * NR + 16 * w)) });
            for (r, acc_r) in acc.iter_mut().enumerate() {
                // SAFETY: r·lda + kk < (MR − 1)·lda + k.
                let i = if PACKED { kk * MR + r } else { r * lda + kk };
                let s = _mm512_set1_ps(unsafe { *ap.add(i) });
                for w in 0..W {
                    acc_r[w] = _mm512_fmadd_ps(s, bv[w], acc_r[w]);
                }
            }
        }
        let masks: [__mmask16; W] = std::array::from_fn(|w| {
            let c = cols.saturating_sub(16 * w).min(16);
            ((1u32 << c) - 1) as __mmask16
        });
        // SAFETY: a bias holds `cols` elements, which the masks cover.
        let bias: Option<[__m512; W]> = match onto {
            Onto::Bias(b) => Some(std::array::from_fn(|w| unsafe {
                _mm512_maskz_loadu_ps(masks[w], b.wrapping_add(16 * w))
            })),
            _ => None,
        };
        // With `16·(W − 1) < cols` (how `tile` picks `W`) no mask is empty.
        for (r, acc_r) in acc.iter().enumerate().take(rows) {
            for w in 0..W {
                // SAFETY: row r starts inside `c` (r < rows), and the mask covers only its
                // first `cols` elements.
                unsafe {
                    let p = c.add(r * ldc + 16 * w);
                    let mut v = acc_r[w];
                    if let Some(bias) = bias {
                        v = _mm512_add_ps(v, bias[w]);
                    } else if matches!(onto, Onto::C) {
                        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(masks[w], p));
                    }
                    _mm512_mask_storeu_ps(p, masks[w], v);
                }
            }
        }
    }
}

/// One block of up to [`block_rows`] rows by `NR` columns at `level`.
///
/// # Safety
/// As [`avx512::tile`]; `level` must be AVX2 or AVX-512 and supported by the CPU.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) unsafe fn tile(
    level: Level,
    k: (usize, usize),
    a: &[f32],
    b: &[f32],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    onto: Onto,
) {
    #[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
    // SAFETY: the caller's contract.
    unsafe {
        match level {
            Level::Avx512 => avx512::tile(k, a, b, c, ldc, rows, cols, onto),
            _ => avx2::tile(k, a, b, c, ldc, rows, cols, onto),
        }
    }
    #[cfg(not(all(target_arch = "x86_64", not(feature = "portable-only"))))]
    {
        let _ = (level, k, a, b, c, ldc, rows, cols, onto);
        unreachable!("packed panels exist only at the AVX2 and AVX-512 levels")
    }
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
mod avx2 {
    use super::{Onto, MR_AVX2 as MR, NR};
    use std::arch::x86_64::*;

    /// A block of up to `MR` (6) rows by `NR` (see [`super::avx512::tile`], with AVX2 and FMA
    /// instead of AVX-512F) as two `6 × 16` sub-tiles: 12 accumulators of 8 lanes, two loads
    /// of the panel and six broadcasts of `a` per 12 multiply-adds. A block of fewer rows (4-row
    /// blocks, a ragged last one) runs sub-tiles of 4 or 2 rows (an odd row computes on the
    /// zero padding and is not stored). A sub-tile wholly right of `cols` is skipped, and a
    /// partial one stores masked.
    ///
    /// # Safety
    /// As [`super::avx512::tile`], with AVX2 and FMA available, except that `a` must hold
    /// `(R − 1)·lda + k` elements for `R` = `rows` rounded up to even (2, 4 or 6).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn tile(
        (k, lda): (usize, usize),
        a: &[f32],
        b: &[f32],
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        onto: Onto,
    ) {
        let even = rows.next_multiple_of(2);
        debug_assert!(a.len() >= (even - 1) * lda + k && b.len() >= k * NR && rows <= MR && cols <= NR);
        for c0 in (0..cols).step_by(16) {
            // SAFETY: the sub-tile's `R` rows (`rows` rounded up to even) lie inside `a`,
            // columns c0..c0 + 16 of the panel
            // inside `b` (NR is a multiple of 16), and `c` at column c0 inside the caller's
            // tile.
            unsafe {
                let (b, c, cols) = (b.as_ptr().add(c0), c.add(c0), (cols - c0).min(16));
                let onto = onto.right(c0);
                // A block computes only the rows it has, in the fewest of 2, 4 or 6.
                match rows {
                    5.. => sub_tile::<6>((k, lda), a.as_ptr(), b, c, ldc, rows, cols, onto),
                    3 | 4 => sub_tile::<4>((k, lda), a.as_ptr(), b, c, ldc, rows, cols, onto),
                    _ => sub_tile::<2>((k, lda), a.as_ptr(), b, c, ldc, rows, cols, onto),
                }
            }
        }
    }

    /// `R × 16` of the block (`rows ≤ R ≤ MR`): `a` at its first row (rows `lda` apart), `b`
    /// at its first column (rows `NR` apart). Compiled for AVX2 and FMA itself (and so is its
    /// `step` closure): as a plain `#[inline(always)]` function its three instances were not
    /// all inlined into `tile`, and the intrinsics then became calls (W1 18× slower).
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn sub_tile<const R: usize>(
        (k, lda): (usize, usize),
        ap: *const f32,
        bp: *const f32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        onto: Onto,
    ) {
        // SAFETY (whole body): the caller's bounds (`tile`), with AVX2 and FMA available.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            // One step of k: two loads of the panel, `R` broadcasts of a, `2R` FMAs.
            let step = |acc: &mut [[__m256; 2]; R], kk: usize| {
                let b0 = _mm256_loadu_ps(bp.add(kk * NR));
                let b1 = _mm256_loadu_ps(bp.add(kk * NR + 8));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    let s = _mm256_broadcast_ss(&*ap.add(r * lda + kk));
                    acc_r[0] = _mm256_fmadd_ps(s, b0, acc_r[0]);
                    acc_r[1] = _mm256_fmadd_ps(s, b1, acc_r[1]);
                }
            };
            // Unrolled by four by hand: without `-C target-cpu` LLVM's generic tuning leaves
            // this loop rolled, and the loop's own work then halves the FMA rate (measured on
            // Zen 3: W1's step products 2x slower than the same code in a native build).
            let mut kk = 0;
            while kk + 4 <= k {
                step(&mut acc, kk);
                step(&mut acc, kk + 1);
                step(&mut acc, kk + 2);
                step(&mut acc, kk + 3);
                kk += 4;
            }
            while kk < k {
                step(&mut acc, kk);
                kk += 1;
            }
            if cols == 16 {
                // A whole sub-tile: plain loads and stores (a masked store is microcoded and
                // slow on AMD cores, and with `KC` blocking `c` is stored once per `KC` rows).
                let bias = match onto {
                    Onto::Bias(b) => Some([_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8))]),
                    _ => None,
                };
                for (r, acc_r) in acc.iter().enumerate().take(rows) {
                    let p = c.add(r * ldc);
                    let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                    if let Some([b0, b1]) = bias {
                        v0 = _mm256_add_ps(v0, b0);
                        v1 = _mm256_add_ps(v1, b1);
                    } else if matches!(onto, Onto::C) {
                        v0 = _mm256_add_ps(v0, _mm256_loadu_ps(p));
                        v1 = _mm256_add_ps(v1, _mm256_loadu_ps(p.add(8)));
                    }
                    _mm256_storeu_ps(p, v0);
                    _mm256_storeu_ps(p.add(8), v1);
                }
                return;
            }
            let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = |from: usize| {
                _mm256_cmpgt_epi32(_mm256_set1_epi32(cols.saturating_sub(from).min(8) as i32), lanes)
            };
            let (m0, m1) = (mask(0), mask(8));
            let bias = match onto {
                Onto::Bias(b) => Some([
                    _mm256_maskload_ps(b, m0),
                    _mm256_maskload_ps(b.wrapping_add(8), m1),
                ]),
                _ => None,
            };
            for (r, acc_r) in acc.iter().enumerate().take(rows) {
                let p = c.add(r * ldc);
                let (mut v0, mut v1) = (acc_r[0], acc_r[1]);
                if let Some([b0, b1]) = bias {
                    v0 = _mm256_add_ps(v0, b0);
                    v1 = _mm256_add_ps(v1, b1);
                } else if matches!(onto, Onto::C) {
                    v0 = _mm256_add_ps(v0, _mm256_maskload_ps(p, m0));
                    if cols > 8 {
                        v1 = _mm256_add_ps(v1, _mm256_maskload_ps(p.add(8), m1));
                    }
                }
                _mm256_maskstore_ps(p, m0, v0);
                if cols > 8 {
                    _mm256_maskstore_ps(p.add(8), m1, v1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::cache::Caches;
    use crate::kernels::test_matrix as m;
    use ndarray::linalg::general_mat_mul;
    use ndarray::Array2;

    /// Block sizes of other cores than this one: a Zen 3 (512 KiB L2), a recent Intel Xeon
    /// (48 KiB L1d, 2 MiB L2), the smallest caches taken as reported, and the fallback.
    fn blockings() -> Vec<Blocking> {
        let c = |l1d, l2| Blocking::for_caches(Caches { l1d, l2 });
        vec![
            Blocking::here(),
            c(32 << 10, 512 << 10),
            c(48 << 10, 2 << 20),
            c(16 << 10, 256 << 10),
            Blocking::for_caches(Caches::FALLBACK),
        ]
    }

    #[test]
    fn block_sizes_follow_the_caches() {
        // Zen 4: the sizes measured best there.
        let zen4 = Blocking::for_caches(Caches::FALLBACK);
        let want = Blocking {
            kc: 128,
            kc_avx512: 256,
            c_rows: 256,
            a_chunk: 64 << 10,
            a_whole: 512 << 10,
            small_b: 1 << 20,
        };
        assert_eq!(zen4, want);
        // A 48 KiB L1d and a 2 MiB L2 (Intel Sapphire Rapids): deeper slices, more in cache.
        let xeon = Blocking::for_caches(Caches {
            l1d: 48 << 10,
            l2: 2 << 20,
        });
        assert_eq!(
            (xeon.kc, xeon.kc_avx512, xeon.c_rows, xeon.small_b),
            (192, 384, 384, 2 << 20)
        );
        // A 512 KiB L2 (Zen 3): a weight of 1 MiB no longer counts as fitting.
        let zen3 = Blocking::for_caches(Caches {
            l1d: 32 << 10,
            l2: 512 << 10,
        });
        assert_eq!((zen3.kc, zen3.a_whole, zen3.small_b), (128, 256 << 10, 512 << 10));
    }

    fn check<F: Float>(level: Level, tol: f64) {
        for blocking in blockings() {
            check_blocked::<F>(level, tol, blocking);
        }
    }

    fn check_blocked<F: Float>(level: Level, tol: f64, blocking: Blocking) {
        let shapes = [
            (1, 1, 1),
            (8, 16, 32),
            (9, 17, 33),
            (32, 50, 200),
            (5, 3, 15),
            (64, 20, 7),
            (3, 0, 4),
            // more than `KC` rows of a panel (ragged last slice), more than `C_ROWS` rows
            // with `a` whole, `a` in `A_CHUNK` chunks, and rows of `a` 4 KiB apart
            (300, 300, 70),
            (1003, 200, 40),
            (40, 1024, 64),
            // deep enough and wide enough for the interleaved blocks of `a` at AVX-512
            // (`PACK_A_MIN_K`, `PACK_A_MIN_N`): ragged rows and panels, and more rows than
            // one chunk
            (19, 512, 530),
            (150, 640, 512),
        ];
        for (rows, k, n) in shapes {
            let a = m::<F>(rows, k, 0.1);
            let w = m::<F>(n, k, 0.2);
            let packed = PackedMatrix::new_at(&w.t(), level);
            assert_eq!(packed.dim(), (k, n));
            // With a bias: every element written (the output starts as NaN).
            let bias = m::<F>(1, n, 0.5).into_shape_with_order(n).unwrap();
            let mut want = Array2::from_shape_fn((rows, n), |(_, j)| bias[j]);
            general_mat_mul(F::one(), &a.view(), &w.t(), F::one(), &mut want.view_mut());
            let mut got = Array2::from_elem((rows, n), F::nan());
            let (a_s, bias_s) = (a.as_slice().unwrap(), bias.as_slice().unwrap());
            packed.mul(a_s, got.as_slice_mut().unwrap(), false, Some(bias_s), blocking);
            let max_diff = |got: &Array2<F>, want: &Array2<F>| {
                got.iter()
                    .zip(want)
                    .fold(0.0f64, |e, (g, w)| e.max((*g - *w).as_f64().abs()))
            };
            let err = max_diff(&got, &want);
            // Rounding grows with the length of the sums.
            let tol_k = tol * (k as f64 / 100.0).max(1.0);
            assert!(
                err < tol_k,
                "{} {rows}x{k}·{k}x{n} with a bias, {blocking:?}: {err}",
                F::NAME
            );
            for accumulate in [false, true] {
                let c0 = m::<F>(rows, n, 0.3);
                let mut want = c0.clone();
                let beta = if accumulate { F::one() } else { F::zero() };
                general_mat_mul(F::one(), &a.view(), &w.t(), beta, &mut want.view_mut());
                let mut got = c0.clone();
                packed.mul(
                    a.as_slice().unwrap(),
                    got.as_slice_mut().unwrap(),
                    accumulate,
                    None,
                    blocking,
                );
                let err = max_diff(&got, &want);
                assert!(
                    err < tol_k,
                    "{} {rows}x{k}·{k}x{n} accumulate {accumulate}, {blocking:?}: {err}",
                    F::NAME
                );
            }
        }
    }

    #[test]
    fn a_large_packed_product_split_across_threads_matches() {
        let (rows, k, n) = (67, 256, 300); // above PAR_MIN_PRODUCT, ragged blocks and panels
        assert!(rows * k * n >= crate::kernels::gemm::PAR_MIN_PRODUCT);
        let a = m::<f32>(rows, k, 0.1);
        let w = m::<f32>(n, k, 0.2);
        let packed = PackedMatrix::new(&w.t());
        let c0 = m::<f32>(rows, n, 0.3);
        let mut want = c0.clone();
        general_mat_mul(1.0, &a.view(), &w.t(), 1.0, &mut want.view_mut());
        for threads in [1, 2, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut got = c0.clone();
            pool.install(|| packed.mul_into(a.as_slice().unwrap(), got.as_slice_mut().unwrap(), true));
            let err = got
                .iter()
                .zip(&want)
                .fold(0.0f32, |e, (g, w)| e.max((g - w).abs()));
            assert!(err < 1e-3, "{threads} threads: {err}");
        }
    }

    #[test]
    fn transposed_products_match_matrixmultiply_on_one_and_two_threads() {
        if !Level::Avx512.is_available() {
            println!("skipped: the transposed path runs only on the AVX-512 tile (this CPU lacks avx512)");
            return;
        }
        // More rows than one chunk (`C_ROWS`) with a ragged last block, several `KB` slices of
        // the depth with a ragged last one, ragged panels; `b` row-major and transposed.
        let (rows, k, n) = (1003, 1300, 530);
        let at = m::<f32>(k, rows, 0.1);
        let (x, w) = (m::<f32>(k, n, 0.2), m::<f32>(n, k, 0.3));
        for b in [x.view(), w.t()] {
            let packed = PackedMatrix::new_at(&b, Level::Avx512);
            for accumulate in [false, true] {
                let c0 = match accumulate {
                    true => m::<f32>(rows, n, 0.4),
                    // Every element written: the output starts as NaN.
                    false => Array2::from_elem((rows, n), f32::NAN),
                };
                let mut want = m::<f32>(rows, n, 0.4);
                let beta = if accumulate { 1.0 } else { 0.0 };
                general_mat_mul(1.0, &at.t(), &b, beta, &mut want.view_mut());
                for threads in [1, 2] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .unwrap();
                    let mut got = c0.clone();
                    let ran = pool.install(|| {
                        packed.mul_transposed_into(
                            at.as_slice().unwrap(),
                            got.as_slice_mut().unwrap(),
                            accumulate,
                        )
                    });
                    assert!(ran);
                    let err = got
                        .iter()
                        .zip(&want)
                        .fold(0.0f32, |e, (g, w)| e.max((g - w).abs() / (1.0 + w.abs())));
                    assert!(err < 1e-4, "accumulate {accumulate}, {threads} threads: {err}");
                }
            }
        }
        // Panels for the AVX2 tile do not take the transposed path.
        if Level::Avx2.is_available() {
            let packed = PackedMatrix::new_at(&x.view(), Level::Avx2);
            let mut c = Array2::<f32>::zeros((rows, n));
            assert!(!packed.mul_transposed_into(at.as_slice().unwrap(), c.as_slice_mut().unwrap(), false));
        }
    }

    #[test]
    fn packed_products_match_matrixmultiply_at_every_edge() {
        // Every tile this CPU has, whatever EDDY_KERNELS chose; f64 always the plain GEMM.
        for level in Level::ALL {
            if !level.is_available() {
                println!("skipped: the {level} tile (this CPU lacks {level})");
                continue;
            }
            check::<f32>(level, 1e-4);
            check::<f64>(level, 1e-12);
        }
    }
}
