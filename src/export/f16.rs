//! The checkpoint's tensors stored as f16 (half the size of the f32 checkpoint) for the candle
//! runtime, and the loader that upcasts them back to the f32 the network computes in.

use std::path::Path;

use candle_core::{DType, Device};

use crate::model::params::ParamError;
use crate::model::ParamStore;

/// Every tensor of `store` (parameters and buffers: batch-norm running statistics and memory
/// items included) as f16, serialized as safetensors.
pub fn store_to_f16_safetensors(store: &ParamStore) -> candle_core::Result<Vec<u8>> {
    let mut halves = Vec::new();
    for (name, t) in store.tensors() {
        // Safetensors wants contiguous CPU data; checkpoints may live on a GPU.
        let h = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F16)?
            .contiguous()?;
        halves.push((name, h));
    }
    safetensors::serialize(halves, None)
        .map_err(|e| candle_core::Error::Msg(format!("serializing f16 safetensors: {e}")))
}

/// A parameter store reading its tensors from an f16 safetensors file on `device`.
///
/// The store upcasts every tensor to f32 as the network takes it (the network computes in
/// f32 only: batch-norm folding and the memory update are not accurate enough in f16), so there
/// is no dtype argument. Build the network with [`crate::model::Mnad::new`], then call
/// [`ParamStore::check_all_used`].
pub fn load_f16_store(path: &Path, device: &Device) -> Result<ParamStore, ParamError> {
    ParamStore::from_safetensors(device.clone(), path)
}
