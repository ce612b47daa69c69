//! The sizes of one core's data caches, read once at run time: the packed kernel's block sizes
//! are derived from them (`packed::Blocking`), so that a product is blocked for the core it
//! runs on (a 48 KiB L1 and a 2 MiB L2 on recent Intel Xeons, 32 KiB and 1 MiB on Zen 4,
//! 512 KiB of L2 on Zen 3) rather than for the core the constants were measured on.
//!
//! Where they come from, first that answers: on x86-64, the CPU's own cache descriptions
//! (`cpuid` leaf 4 on Intel, `0x8000001D` on AMD: the same layout); on Linux,
//! `/sys/devices/system/cpu/cpu0/cache`; otherwise [`Caches::FALLBACK`]. Sizes outside
//! [`Caches::L1D_RANGE`] and [`Caches::L2_RANGE`] (a hypervisor's odd report) are clamped into
//! them.

use std::ops::RangeInclusive;
use std::sync::OnceLock;

/// The data caches private to one core, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caches {
    /// Level-1 data cache.
    pub l1d: usize,
    /// Level-2 cache (unified).
    pub l2: usize,
}

impl Caches {
    /// What the kernels assume when the CPU and the OS report nothing: a Zen 4 core, on which
    /// the block sizes were measured.
    pub const FALLBACK: Caches = Caches {
        l1d: 32 << 10,
        l2: 1 << 20,
    };
    /// The L1 sizes taken as reported; others are clamped into this range.
    pub const L1D_RANGE: RangeInclusive<usize> = (16 << 10)..=(128 << 10);
    /// The L2 sizes taken as reported; others are clamped into this range.
    pub const L2_RANGE: RangeInclusive<usize> = (256 << 10)..=(4 << 20);

    /// `l1d` and `l2` (either missing: the fallback's), clamped into the ranges above.
    fn sane(l1d: Option<usize>, l2: Option<usize>) -> Caches {
        let clamp = |v: usize, r: &RangeInclusive<usize>| v.clamp(*r.start(), *r.end());
        Caches {
            l1d: clamp(l1d.unwrap_or(Self::FALLBACK.l1d), &Self::L1D_RANGE),
            l2: clamp(l2.unwrap_or(Self::FALLBACK.l2), &Self::L2_RANGE),
        }
    }
}

/// This machine's caches (read at the first call; see the module's doc for where from).
pub fn caches() -> Caches {
    static CACHES: OnceLock<Caches> = OnceLock::new();
    *CACHES.get_or_init(detect)
}

fn detect() -> Caches {
    let (l1d, l2) = from_cpuid();
    let (l1d, l2) = match (l1d, l2) {
        (Some(a), Some(b)) => (Some(a), Some(b)),
        _ => from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache")),
    };
    Caches::sane(l1d, l2)
}

/// One cache as `cpuid` leaf 4 (Intel) or `0x8000001D` (AMD) describes it: `(level, kind,
/// bytes)` with `kind` 1 data, 2 instruction, 3 unified, or `None` past the last cache (kind 0).
#[cfg_attr(
    not(all(target_arch = "x86_64", not(feature = "portable-only"))),
    allow(dead_code)
)]
fn cpuid_cache(eax: u32, ebx: u32, ecx: u32) -> Option<(u32, u32, usize)> {
    let kind = eax & 0x1f;
    if kind == 0 {
        return None;
    }
    let level = (eax >> 5) & 0x7;
    let ways = ((ebx >> 22) & 0x3ff) as usize + 1;
    let partitions = ((ebx >> 12) & 0x3ff) as usize + 1;
    let line = (ebx & 0xfff) as usize + 1;
    let sets = ecx as usize + 1;
    Some((level, kind, ways * partitions * line * sets))
}

/// The L1 data and L2 sizes from the caches' descriptions `(level, kind, bytes)`.
fn pick(caches: impl IntoIterator<Item = (u32, u32, usize)>) -> (Option<usize>, Option<usize>) {
    let (mut l1d, mut l2) = (None, None);
    for (level, kind, bytes) in caches {
        match (level, kind) {
            (1, 1 | 3) => l1d = Some(bytes),
            (2, 1 | 3) => l2 = Some(bytes),
            _ => {}
        }
    }
    (l1d, l2)
}

#[cfg(all(target_arch = "x86_64", not(feature = "portable-only")))]
fn from_cpuid() -> (Option<usize>, Option<usize>) {
    use std::arch::x86_64::__cpuid_count;
    // Leaf 0's EBX, EDX, ECX spell the vendor; AMD describes its caches in the extended leaf.
    let vendor = __cpuid_count(0, 0);
    let amd = (vendor.ebx, vendor.edx, vendor.ecx) == (0x6874_7541, 0x6974_6e65, 0x444d_4163);
    let (leaf, max) = if amd {
        (0x8000_001d, __cpuid_count(0x8000_0000, 0).eax)
    } else {
        (4, vendor.eax)
    };
    if max < leaf {
        return (None, None);
    }
    pick((0..16).map_while(|sub| {
        let r = __cpuid_count(leaf, sub);
        cpuid_cache(r.eax, r.ebx, r.ecx)
    }))
}

#[cfg(not(all(target_arch = "x86_64", not(feature = "portable-only"))))]
fn from_cpuid() -> (Option<usize>, Option<usize>) {
    (None, None)
}

/// The caches listed under `dir` as Linux lists them (`index*/level`, `type`, `size`).
fn from_sysfs(dir: &std::path::Path) -> (Option<usize>, Option<usize>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (None, None);
    };
    let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
    pick(entries.flatten().filter_map(|e| {
        let d = e.path();
        let level = read(d.join("level"))?.trim().parse().ok()?;
        let kind = match read(d.join("type"))?.trim() {
            "Data" => 1,
            "Instruction" => 2,
            "Unified" => 3,
            _ => return None,
        };
        Some((level, kind, parse_size(&read(d.join("size"))?)?))
    }))
}

/// `"32K"`, `"1024K"`, `"2M"` or a plain count of bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: usize = digits.parse().ok()?;
    let shift = match unit.trim() {
        "" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpuid_descriptions_decode_to_sizes() {
        // Zen 4's L1d: 8 ways, 1 partition, 64-byte lines, 64 sets (kind 1, level 1).
        let eax = 1 | (1 << 5);
        let ebx = (7 << 22) | 63;
        assert_eq!(cpuid_cache(eax, ebx, 63), Some((1, 1, 32 << 10)));
        // Its L2: 8 ways, 2048 sets, unified, level 2.
        assert_eq!(cpuid_cache(3 | (2 << 5), ebx, 2047), Some((2, 3, 1 << 20)));
        assert_eq!(cpuid_cache(0, ebx, 63), None, "kind 0 ends the list");
    }

    #[test]
    fn the_l1_data_and_l2_caches_are_picked() {
        let listed = [
            (1, 2, 32 << 10),
            (1, 1, 48 << 10),
            (2, 3, 2 << 20),
            (3, 3, 32 << 20),
        ];
        assert_eq!(pick(listed), (Some(48 << 10), Some(2 << 20)));
        assert_eq!(pick([(3, 3, 8 << 20)]), (None, None));
    }

    #[test]
    fn sizes_parse_as_linux_writes_them() {
        assert_eq!(parse_size("32K\n"), Some(32 << 10));
        assert_eq!(parse_size("1024K"), Some(1 << 20));
        assert_eq!(parse_size("2M"), Some(2 << 20));
        assert_eq!(parse_size("65536"), Some(65536));
        assert_eq!(parse_size("big"), None);
        assert_eq!(parse_size("12G"), None);
    }

    #[test]
    fn sysfs_listings_are_read() {
        let dir = std::env::temp_dir().join(format!("eddy-cache-test-{}", std::process::id()));
        for (i, level, kind, size) in [
            (0, "1", "Data", "48K"),
            (1, "1", "Instruction", "32K"),
            (2, "2", "Unified", "2048K"),
            (3, "3", "Unified", "105M"),
        ] {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            for (f, v) in [("level", level), ("type", kind), ("size", size)] {
                std::fs::write(d.join(f), format!("{v}\n")).unwrap();
            }
        }
        let got = from_sysfs(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(got, (Some(48 << 10), Some(2 << 20)));
        assert_eq!(from_sysfs(&dir), (None, None), "no directory, nothing read");
    }

    #[test]
    fn odd_reports_are_clamped_and_missing_ones_fall_back() {
        assert_eq!(Caches::sane(None, None), Caches::FALLBACK);
        let c = Caches::sane(Some(1 << 10), Some(64 << 20));
        assert_eq!(
            c,
            Caches {
                l1d: 16 << 10,
                l2: 4 << 20
            }
        );
    }

    /// Linux fills its listing from the same `cpuid` leaves on x86-64, so the two readings
    /// agree wherever both answer.
    #[test]
    fn cpuid_and_linux_agree_where_both_answer() {
        let cpu = from_cpuid();
        let os = from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"));
        match (cpu, os) {
            ((Some(_), Some(_)), (Some(_), Some(_))) => assert_eq!(cpu, os),
            _ => println!("skipped: cpuid {cpu:?} or the OS {os:?} reports no caches here"),
        }
    }

    #[test]
    fn this_machine_reports_caches_in_range() {
        let c = caches();
        assert!(
            Caches::L1D_RANGE.contains(&c.l1d) && Caches::L2_RANGE.contains(&c.l2),
            "{c:?}"
        );
        println!("this machine: L1d {} KiB, L2 {} KiB", c.l1d >> 10, c.l2 >> 10);
    }
}
