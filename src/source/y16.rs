//! Raw Y16 stream files. (Being written.)
