//! V4L2 camera source. (Being written.)
