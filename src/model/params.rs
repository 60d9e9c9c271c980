//! Named parameters and buffers, created with seeded initialisation or loaded from safetensors.
//!
//! Trainable parameters and buffers (batch-norm running statistics, memory items) live in one
//! store under dotted names that follow the module tree (`dec.gen.block.conv1.weight`), so the
//! checkpoint, the ONNX exporter and the PyTorch reference all agree on them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor, Var};

use crate::rng::Rng;

/// How a new tensor is filled.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Every element the same value.
    Const(f32),
    /// Uniform in [−bound, bound] (PyTorch's default for conv and linear layers is 1/√fan_in).
    Uniform(f32),
    /// Normal with mean 0 and the given standard deviation.
    Normal(f32),
    /// Uniform in [0, 1), then each row scaled to unit L2 norm (MNAD's memory initialisation).
    UnitRows,
}

/// Whether a tensor is trained by the optimizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Trained by gradient descent.
    Param,
    /// State updated by its own rule (running statistics, memory).
    Buffer,
}

#[derive(Debug)]
struct Entry {
    var: Var,
    kind: Kind,
}

/// Why parameters could not be created or loaded.
#[derive(Debug, thiserror::Error)]
pub enum ParamError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// A loaded tensor has the wrong shape.
    #[error("{name}: checkpoint has shape {found:?}, the model needs {expected:?}")]
    Shape {
        /// Parameter name.
        name: String,
        /// Shape in the file.
        found: Vec<usize>,
        /// Shape the model needs.
        expected: Vec<usize>,
    },
    /// A tensor the model needs is missing from the file.
    #[error("{file}: missing tensor {name}")]
    Missing {
        /// File being loaded.
        file: String,
        /// Parameter name.
        name: String,
    },
    /// The file holds tensors the model does not have (a different architecture).
    #[error("{file}: unexpected tensors {names:?} (was it written for another model config?)")]
    Unexpected {
        /// File being loaded.
        file: String,
        /// Extra names.
        names: Vec<String>,
    },
}

/// The store of all named tensors of one model.
#[derive(Debug)]
pub struct ParamStore {
    device: Device,
    entries: Mutex<BTreeMap<String, Entry>>,
    rng: Mutex<Rng>,
    loaded: Option<(String, HashMap<String, Tensor>)>,
}

impl ParamStore {
    /// An empty store whose new tensors are initialised from `seed`.
    pub fn new(device: Device, seed: u64) -> Self {
        Self {
            device,
            entries: Mutex::new(BTreeMap::new()),
            rng: Mutex::new(Rng::new(seed)),
            loaded: None,
        }
    }

    /// A store that takes every tensor from a safetensors file instead of initialising it.
    pub fn from_safetensors(device: Device, path: &Path) -> Result<Self, ParamError> {
        let tensors = candle_core::safetensors::load(path, &device)?;
        let mut s = Self::new(device, 0);
        s.loaded = Some((path.display().to_string(), tensors));
        Ok(s)
    }

    /// Device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A builder for tensors under `prefix`.
    pub fn root(&self) -> Builder<'_> {
        Builder {
            store: self,
            prefix: "",
        }
    }

    fn create(
        &self,
        name: &str,
        shape: &[usize],
        init: Init,
        kind: Kind,
    ) -> Result<Tensor, ParamError> {
        let n: usize = shape.iter().product();
        let t = match &self.loaded {
            Some((file, map)) => {
                let t = map.get(name).ok_or_else(|| ParamError::Missing {
                    file: file.clone(),
                    name: name.into(),
                })?;
                if t.dims() != shape {
                    return Err(ParamError::Shape {
                        name: name.into(),
                        found: t.dims().to_vec(),
                        expected: shape.to_vec(),
                    });
                }
                t.to_dtype(DType::F32)?
            }
            None => {
                let mut rng = self.rng.lock().expect("param rng lock");
                let data: Vec<f32> = match init {
                    Init::Const(v) => vec![v; n],
                    Init::Uniform(b) => (0..n)
                        .map(|_| rng.uniform(-f64::from(b), f64::from(b)) as f32)
                        .collect(),
                    Init::Normal(s) => (0..n)
                        .map(|_| (rng.normal() * f64::from(s)) as f32)
                        .collect(),
                    Init::UnitRows => {
                        let cols = *shape.last().unwrap_or(&1);
                        let mut d: Vec<f32> = (0..n).map(|_| rng.f32()).collect();
                        for row in d.chunks_mut(cols.max(1)) {
                            let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                            row.iter_mut().for_each(|v| *v /= norm);
                        }
                        d
                    }
                };
                Tensor::from_vec(data, shape, &self.device)?
            }
        };
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        self.entries
            .lock()
            .expect("param lock")
            .insert(name.to_string(), Entry { var, kind });
        Ok(out)
    }

    /// Checks, after building a model from a file, that the file held nothing else.
    pub fn check_all_used(&self) -> Result<(), ParamError> {
        if let Some((file, map)) = &self.loaded {
            let entries = self.entries.lock().expect("param lock");
            let mut extra: Vec<String> = map
                .keys()
                .filter(|k| !entries.contains_key(*k))
                .cloned()
                .collect();
            if !extra.is_empty() {
                extra.sort();
                return Err(ParamError::Unexpected {
                    file: file.clone(),
                    names: extra,
                });
            }
        }
        Ok(())
    }

    /// The trainable variables, in name order.
    pub fn params(&self) -> Vec<(String, Var)> {
        self.entries
            .lock()
            .expect("param lock")
            .iter()
            .filter(|(_, e)| e.kind == Kind::Param)
            .map(|(k, e)| (k.clone(), e.var.clone()))
            .collect()
    }

    /// A variable (parameter or buffer) by name.
    pub fn var(&self, name: &str) -> Option<Var> {
        self.entries
            .lock()
            .expect("param lock")
            .get(name)
            .map(|e| e.var.clone())
    }

    /// Every tensor (parameters and buffers) by name, for saving.
    pub fn tensors(&self) -> BTreeMap<String, Tensor> {
        self.entries
            .lock()
            .expect("param lock")
            .iter()
            .map(|(k, e)| (k.clone(), e.var.as_tensor().copy().expect("copy")))
            .collect()
    }

    /// Writes every tensor to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<(), ParamError> {
        let map: HashMap<String, Tensor> = self.tensors().into_iter().collect();
        candle_core::safetensors::save(&map, path)?;
        Ok(())
    }

    /// Number of trainable scalars.
    pub fn param_count(&self) -> usize {
        self.params().iter().map(|(_, v)| v.elem_count()).sum()
    }
}

/// Creates tensors under a name prefix; modules take one in their constructor.
#[derive(Clone, Copy)]
pub struct Builder<'a> {
    store: &'a ParamStore,
    prefix: &'a str,
}

impl<'a> Builder<'a> {
    fn name(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.prefix)
        }
    }

    /// A builder one level down the module tree.
    pub fn pp(&self, sub: &str) -> OwnedBuilder<'a> {
        OwnedBuilder {
            store: self.store,
            prefix: self.name(sub),
        }
    }

    /// A trainable parameter.
    pub fn param(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ParamError> {
        self.store
            .create(&self.name(name), shape, init, Kind::Param)
    }

    /// A buffer (not trained by the optimizer).
    pub fn buffer(&self, name: &str, shape: &[usize], init: Init) -> Result<Tensor, ParamError> {
        self.store
            .create(&self.name(name), shape, init, Kind::Buffer)
    }

    /// The variable behind a buffer, for in-place updates.
    pub fn var(&self, name: &str) -> Option<Var> {
        self.store.var(&self.name(name))
    }

    /// Device of the store.
    pub fn device(&self) -> &Device {
        self.store.device()
    }

    /// The dotted name prefix of this builder (`dec.gen`).
    pub fn prefix(&self) -> &str {
        self.prefix
    }
}

/// A [`Builder`] that owns its prefix (what [`Builder::pp`] returns).
pub struct OwnedBuilder<'a> {
    store: &'a ParamStore,
    prefix: String,
}

impl OwnedBuilder<'_> {
    /// Borrows as a [`Builder`].
    pub fn b(&self) -> Builder<'_> {
        Builder {
            store: self.store,
            prefix: &self.prefix,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_init_is_reproducible_and_named_by_tree() {
        let make = |seed| {
            let s = ParamStore::new(Device::Cpu, seed);
            let enc = s.root().pp("enc");
            let w = enc.b().param("w", &[3, 4], Init::Uniform(0.5)).unwrap();
            enc.b().buffer("m", &[2, 4], Init::UnitRows).unwrap();
            (s, w.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        };
        let (s1, a) = make(1);
        let (_, b) = make(1);
        let (_, c) = make(2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| v.abs() <= 0.5));
        assert_eq!(s1.params().len(), 1);
        assert_eq!(s1.params()[0].0, "enc.w");
        let m = s1
            .var("enc.m")
            .unwrap()
            .as_tensor()
            .to_vec2::<f32>()
            .unwrap();
        for row in m {
            assert!((row.iter().map(|v| v * v).sum::<f32>() - 1.0).abs() < 1e-5);
        }
    }

    #[test]
    fn loading_checks_names_and_shapes() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("w.safetensors");
        let s = ParamStore::new(Device::Cpu, 3);
        s.root().param("a", &[2, 2], Init::Uniform(1.0)).unwrap();
        s.root().param("b", &[3], Init::Const(0.5)).unwrap();
        s.save(&p).unwrap();

        let l = ParamStore::from_safetensors(Device::Cpu, &p).unwrap();
        let a = l.root().param("a", &[2, 2], Init::Const(0.0)).unwrap();
        assert_eq!(
            a.to_vec2::<f32>().unwrap(),
            s.var("a").unwrap().as_tensor().to_vec2::<f32>().unwrap()
        );
        let e = l.check_all_used().unwrap_err().to_string();
        assert!(
            e.contains("unexpected tensors") && e.contains("\"b\""),
            "{e}"
        );
        let wrong = ParamStore::from_safetensors(Device::Cpu, &p).unwrap();
        assert!(matches!(
            wrong.root().param("a", &[4], Init::Const(0.0)),
            Err(ParamError::Shape { .. })
        ));
        assert!(matches!(
            wrong.root().param("zz", &[4], Init::Const(0.0)),
            Err(ParamError::Missing { .. })
        ));
    }
}
