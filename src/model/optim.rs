//! Adam (PyTorch's defaults: β = (0.9, 0.999), ε = 1e-8, no weight decay) with state that can
//! be saved and restored, and the cosine learning-rate schedule stepped once per epoch.

use std::collections::HashMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};

/// Adam over a fixed list of named variables.
#[derive(Debug)]
pub struct Adam {
    vars: Vec<(String, Var)>,
    m: Vec<Option<Tensor>>,
    v: Vec<Option<Tensor>>,
    steps: Vec<u64>,
    /// Learning rate used by the next step.
    pub lr: f64,
    beta1: f64,
    beta2: f64,
    eps: f64,
}

impl Adam {
    /// Adam over `vars` with learning rate `lr`.
    pub fn new(vars: Vec<(String, Var)>, lr: f64) -> Self {
        let n = vars.len();
        Self {
            vars,
            m: vec![None; n],
            v: vec![None; n],
            steps: vec![0; n],
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// One update from the gradients; variables without a gradient are left alone (as PyTorch).
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        for (i, (_, var)) in self.vars.iter().enumerate() {
            let Some(g) = grads.get(var) else { continue };
            self.steps[i] += 1;
            let t = self.steps[i] as i32;
            let m = match &self.m[i] {
                Some(m) => ((m * self.beta1)? + (g * (1.0 - self.beta1))?)?,
                None => (g * (1.0 - self.beta1))?,
            };
            let v = match &self.v[i] {
                Some(v) => ((v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?,
                None => (g.sqr()? * (1.0 - self.beta2))?,
            };
            let mhat = (&m / (1.0 - self.beta1.powi(t)))?;
            let vhat = (&v / (1.0 - self.beta2.powi(t)))?;
            let upd = (mhat / (vhat.sqrt()? + self.eps)?)?;
            var.set(&(var.as_tensor() - (upd * self.lr)?)?)?;
            self.m[i] = Some(m);
            self.v[i] = Some(v);
        }
        Ok(())
    }

    /// Saves moments and step counts.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut map = HashMap::new();
        for (i, (name, _)) in self.vars.iter().enumerate() {
            if let (Some(m), Some(v)) = (&self.m[i], &self.v[i]) {
                map.insert(format!("m.{name}"), m.clone());
                map.insert(format!("v.{name}"), v.clone());
                map.insert(
                    format!("step.{name}"),
                    Tensor::new(&[self.steps[i] as f64], m.device())?,
                );
            }
        }
        candle_core::safetensors::save(&map, path)
    }

    /// Restores moments and step counts saved by [`Adam::save`].
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let dev = self
            .vars
            .first()
            .map(|(_, v)| v.device().clone())
            .unwrap_or(candle_core::Device::Cpu);
        let map = candle_core::safetensors::load(path, &dev)?;
        for (i, (name, var)) in self.vars.iter().enumerate() {
            if let (Some(m), Some(v), Some(s)) = (
                map.get(&format!("m.{name}")),
                map.get(&format!("v.{name}")),
                map.get(&format!("step.{name}")),
            ) {
                if m.dims() != var.dims() {
                    candle_core::bail!(
                        "{}: optimizer state for {name} has shape {:?}, parameter is {:?}",
                        path.display(),
                        m.dims(),
                        var.dims()
                    );
                }
                self.m[i] = Some(m.clone());
                self.v[i] = Some(v.clone());
                self.steps[i] = s.to_vec1::<f64>()?[0] as u64;
            }
        }
        Ok(())
    }
}

/// Cosine annealing (PyTorch's CosineAnnealingLR with η_min = 0) at `epoch` of `total`.
pub fn cosine_lr(base: f64, epoch: usize, total: usize) -> f64 {
    if total == 0 {
        return base;
    }
    base * 0.5 * (1.0 + (std::f64::consts::PI * epoch as f64 / total as f64).cos())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn adam_first_steps_match_pytorch() {
        // f(x) = x² from x = 1, lr 0.1: Adam's first step moves by lr·sign(g) = 0.1 exactly.
        let x = Var::new(&[1.0f32], &Device::Cpu).unwrap();
        let mut opt = Adam::new(vec![("x".into(), x.clone())], 0.1);
        let g = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&g).unwrap();
        let v = x.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v - 0.9).abs() < 1e-6, "{v}");
        // Second step (PyTorch gives 0.80000...): g = 1.8; m = 0.09·... ; close to another 0.1.
        let g = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        opt.step(&g).unwrap();
        let v2 = x.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((v2 - 0.8).abs() < 2e-3, "{v2}");
    }

    #[test]
    fn state_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let x = Var::new(&[1.0f32, 2.0], &Device::Cpu).unwrap();
        let mut a = Adam::new(vec![("x".into(), x.clone())], 0.01);
        for _ in 0..3 {
            let g = x
                .as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            a.step(&g).unwrap();
        }
        a.save(&d.path().join("o.safetensors")).unwrap();
        let y = Var::new(&x.as_tensor().to_vec1::<f32>().unwrap()[..], &Device::Cpu).unwrap();
        let mut b = Adam::new(vec![("x".into(), y.clone())], 0.01);
        b.load(&d.path().join("o.safetensors")).unwrap();
        let g = x
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        a.step(&g).unwrap();
        let g = y
            .as_tensor()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        b.step(&g).unwrap();
        assert_eq!(
            x.as_tensor().to_vec1::<f32>().unwrap(),
            y.as_tensor().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn cosine_schedule_ends_at_zero() {
        assert_eq!(cosine_lr(2e-4, 0, 10), 2e-4);
        assert!((cosine_lr(2e-4, 5, 10) - 1e-4).abs() < 1e-12);
        assert!(cosine_lr(2e-4, 10, 10).abs() < 1e-12);
    }
}
