//! Element-wise loops compiled for the widest vectors the CPU has.
//!
//! The workspace builds for the baseline x86-64 (SSE2), so that one binary
//! runs on every CPU; Burn's own kernels pick AVX2 or AVX-512 at run time.
//! [`widest!`] does the same for a loop of ours: it defines a function that
//! runs the loop's body compiled for AVX-512 or AVX2+FMA when the CPU has
//! them, and for the baseline otherwise. Floating-point results do not
//! depend on the choice: Rust never fuses a multiply and an add on its own.

/// Defines `fn NAME(ARGS) -> R` that calls `BODY(ARGS)` (an
/// `#[inline(always)]` function, so that it is compiled inside each
/// variant) in the variant for the widest vector instructions the CPU
/// supports, detected at run time.
#[cfg(feature = "blas")]
macro_rules! widest {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? = $body:path;) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx2,fma")]
                unsafe fn x86_v4($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn x86_v3($($arg: $ty),*) $(-> $ret)? {
                    $body($($arg),*)
                }
                if $crate::simd::has_avx512() {
                    // SAFETY: the CPU has every feature `x86_v4` is compiled for.
                    return unsafe { x86_v4($($arg),*) };
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU has every feature `x86_v3` is compiled for.
                    return unsafe { x86_v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}
#[cfg(feature = "blas")]
pub(crate) use widest;

/// Whether the CPU has the AVX-512 subsets [`widest!`] compiles for.
#[cfg(all(target_arch = "x86_64", feature = "blas"))]
#[inline]
pub(crate) fn has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Whether the CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(all(test, feature = "blas"))]
mod tests {
    #[inline(always)]
    fn scaled_sum(xs: &[f32], scale: f32) -> f32 {
        xs.iter().map(|x| x * scale).sum()
    }

    super::widest! {
        fn dispatched_scaled_sum(xs: &[f32], scale: f32) -> f32 = scaled_sum;
    }

    #[test]
    fn every_variant_computes_the_same_value() {
        let xs: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.37).sin()).collect();
        assert_eq!(
            dispatched_scaled_sum(&xs, 1.5).to_bits(),
            scaled_sum(&xs, 1.5).to_bits()
        );
    }
}
