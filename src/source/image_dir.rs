//! Image directories. (Being written.)
