//! CPTV (Cacophony Project Thermal Video) decoder. (Being written.)
use super::SourceError;
/// shim
pub struct CptvSource;
impl CptvSource {
    /// shim
    pub fn open(path: &std::path::Path) -> Result<super::npy::NpySource, SourceError> {
        Err(SourceError::invalid(path, "cptv not yet"))
    }
}
