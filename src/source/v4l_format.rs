//! V4L2 pixel-format conversions. (Being written.)
