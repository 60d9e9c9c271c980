//! Opening a source by path. (Being written.)

/// How to open a source.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {}

/// Opens a source.
pub fn open_source() {}
