//! Evaluation output a person reads: plots of ROC curves and score timelines.

pub mod plots;
