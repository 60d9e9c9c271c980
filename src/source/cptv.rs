//! CPTV (Cacophony Project Thermal Video) decoder. (Being written.)
