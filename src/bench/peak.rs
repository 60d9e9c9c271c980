//! This CPU's peak f32 rate, measured with a large matrix multiply two ways: tract's own kernels
//! (an ONNX `MatMul` against a constant, pre-packed like a convolution's weights) and the
//! `gemm` crate candle uses. The larger is the machine's limit that results are stated against.

use std::time::{Duration, Instant};

use prost::Message;
use tract_onnx::prelude::{tvec, Framework, InferenceModelExt, IntoTValue, Tensor};
use tract_onnx::tract_core::prelude::RunOptions;

use super::BenchError;
use crate::export::onnx::{Dim, GraphBuilder};

/// The measured peak.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Peak {
    /// Threads the multiply ran on.
    pub threads: usize,
    /// Matrix size n (n×n by n×n).
    pub n: usize,
    /// The larger of the two rates, GFLOP/s (2n³ flops per multiply).
    pub gflops: f64,
    /// tract's matrix-multiply kernels, GFLOP/s (best run).
    pub tract_gflops: f64,
    /// The `gemm` crate (candle's CPU matmul), GFLOP/s (best run).
    pub gemm_gflops: f64,
}

/// Runs `f` until `budget` has passed (at least 3 times) and returns the fastest run.
fn best_of(
    budget: Duration,
    mut f: impl FnMut() -> Result<(), BenchError>,
) -> Result<f64, BenchError> {
    f()?; // warm-up: packing, page faults, thread start
    let started = Instant::now();
    let mut best = f64::INFINITY;
    let mut runs = 0;
    while runs < 3 || started.elapsed() < budget {
        let t = Instant::now();
        f()?;
        best = best.min(t.elapsed().as_secs_f64());
        runs += 1;
    }
    Ok(best)
}

fn pseudo_random(len: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

type Runnable = std::sync::Arc<tract_onnx::prelude::TypedRunnableModel>;

fn tract_err(what: &str) -> impl FnOnce(tract_onnx::prelude::TractError) -> BenchError {
    let what = what.to_string();
    move |e| BenchError::Invalid(format!("tract {what}: {e:#}"))
}

/// tract's plan of `a · b` for an n×n input `a` and the constant `b` (row-major n×n).
fn tract_matmul(n: usize, b: &[f32], threads: usize) -> Result<Runnable, BenchError> {
    let mut g = GraphBuilder::new();
    let a = g.input("a", &[Dim::Fixed(n), Dim::Fixed(n)]);
    let b = g.constant_f32("b", &[n, n], b);
    g.node_named("MatMul", &[&a, &b], "c", &[]);
    g.output("c", &[Dim::Fixed(n), Dim::Fixed(n)]);
    let bytes = g.finish("peak", "peak f32 matmul").encode_to_vec();
    tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .map_err(tract_err("loading the matmul"))?
        .into_optimized()
        .map_err(tract_err("optimizing the matmul"))?
        .into_runnable_with_options(&RunOptions {
            executor: (threads > 1)
                .then(|| tract_linalg::multithread::Executor::multithread(threads)),
            ..Default::default()
        })
        .map_err(tract_err("planning the matmul"))
}

fn tract_run(model: &Runnable, n: usize, a: &Tensor) -> Result<Vec<f32>, BenchError> {
    let out = model
        .run(tvec!(a.clone().into_tvalue()))
        .map_err(tract_err("running the matmul"))?;
    let v = out[0]
        .to_plain_array_view::<f32>()
        .map_err(tract_err("reading the product"))?;
    debug_assert_eq!(v.len(), n * n);
    Ok(v.iter().copied().collect())
}

/// tract's rate on an n×n by n×n multiply, GFLOP/s.
pub fn tract_matmul_gflops(n: usize, threads: usize, budget: Duration) -> Result<f64, BenchError> {
    let model = tract_matmul(n, &pseudo_random(n * n, 2), threads)?;
    let a = Tensor::from_shape(&[n, n], &pseudo_random(n * n, 1)).map_err(tract_err("input"))?;
    let secs = best_of(budget, || {
        // The n² copy out is noise next to the n³ multiply.
        std::hint::black_box(tract_run(&model, n, &a)?);
        Ok(())
    })?;
    Ok(2.0 * (n as f64).powi(3) / secs / 1e9)
}

/// c = a · b for row-major n×n matrices, with the `gemm` crate.
fn gemm_into(n: usize, a: &[f32], b: &[f32], c: &mut [f32], threads: usize) {
    assert!(a.len() == n * n && b.len() == n * n && c.len() == n * n);
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    let nn = n as isize;
    // SAFETY: a, b and c are n×n row-major (column stride 1, row stride n, checked above), c
    // is not aliased, and read_dst = false so c's contents are only written.
    unsafe {
        gemm::gemm(
            n,
            n,
            n,
            c.as_mut_ptr(),
            1,
            nn,
            false,
            a.as_ptr(),
            1,
            nn,
            b.as_ptr(),
            1,
            nn,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The `gemm` crate's rate on an n×n by n×n multiply, GFLOP/s.
pub fn gemm_gflops(n: usize, threads: usize, budget: Duration) -> Result<f64, BenchError> {
    let a = pseudo_random(n * n, 3);
    let b = pseudo_random(n * n, 4);
    let mut c = vec![0f32; n * n];
    let secs = best_of(budget, || {
        gemm_into(n, &a, &b, &mut c, threads);
        std::hint::black_box(&c);
        Ok(())
    })?;
    Ok(2.0 * (n as f64).powi(3) / secs / 1e9)
}

/// Measures both and keeps the larger as the peak (`n` = 1024 is large enough to be
/// compute-bound on any CPU we ship to; `budget` is per method).
pub fn measure(n: usize, threads: usize, budget: Duration) -> Result<Peak, BenchError> {
    let tract_gflops = tract_matmul_gflops(n, threads, budget)?;
    let gemm_gflops = gemm_gflops(n, threads, budget)?;
    Ok(Peak {
        threads,
        n,
        gflops: tract_gflops.max(gemm_gflops),
        tract_gflops,
        gemm_gflops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_multiplies_compute_the_product() {
        // The rates are only meaningful if the timed work is the real product.
        let n = 33;
        let (a, b) = (pseudo_random(n * n, 5), pseudo_random(n * n, 6));
        let mut want = vec![0f32; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    want[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        let close = |got: &[f32]| got.iter().zip(&want).all(|(g, w)| (g - w).abs() < 1e-4);
        let mut c = vec![0f32; n * n];
        gemm_into(n, &a, &b, &mut c, 1);
        assert!(close(&c));
        gemm_into(n, &a, &b, &mut c, 2);
        assert!(close(&c));
        for threads in [1, 2] {
            let model = tract_matmul(n, &b, threads).unwrap();
            let at = Tensor::from_shape(&[n, n], &a).unwrap();
            assert!(close(&tract_run(&model, n, &at).unwrap()), "{threads}");
        }
        let p = measure(64, 1, Duration::from_millis(1)).unwrap();
        assert!(p.gflops > 0.0 && p.gflops.is_finite());
        assert_eq!(p.gflops, p.tract_gflops.max(p.gemm_gflops));
    }
}
