//! Runtime dispatch of the CPU ops' plain-Rust loops to AVX2.
//!
//! The crate is built for baseline x86-64, where the compiler vectorises these loops 4 lanes
//! wide (SSE2). [`avx2_dispatch!`] compiles a function body a second time with AVX2 enabled
//! (8 lanes) and picks that copy when the host has AVX2. Both copies do the same IEEE
//! operations in the same order — no FMA contraction happens without `mul_add`, and the loops
//! keep fixed partial-sum lanes — so they give bit-identical results; only the speed differs.

/// Whether the host has AVX2 (`std` caches the CPUID answer).
#[inline]
pub(super) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn name(args) -> ret { body }` so that the body runs compiled for AVX2 on hosts
/// that have it. Whatever the body calls must be `#[inline(always)]` (or itself dispatched) to
/// be compiled for AVX2 too.
macro_rules! avx2_dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    portable($($arg),*)
                }
                if $crate::backend::cpu::simd::has_avx2() {
                    // SAFETY: the host has AVX2, checked just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}
pub(super) use avx2_dispatch;
