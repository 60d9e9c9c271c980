//! Raw Y16 stream files. (Being written.)
use super::SourceError;
/// shim
pub struct Y16FileSource;
impl Y16FileSource {
    /// shim
    pub fn open(
        path: &std::path::Path,
        _w: u32,
        _h: u32,
        _u: crate::frame::Units,
    ) -> Result<super::npy::NpySource, SourceError> {
        Err(SourceError::invalid(path, "y16 not yet"))
    }
}
