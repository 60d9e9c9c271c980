//! Harbor simulator. (Being written.)
