//! Thermal Rare Event layout. (Being written.)
