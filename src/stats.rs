//! Small statistics shared by the export's parity report and the scoring/evaluation code:
//! Pearson correlation, tie-aware ROC AUC, average precision, median and MAD.

/// Pearson correlation of two equally long series (0 when either is constant or too short).
pub fn pearson(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    if n < 2 {
        return 0.0;
    }
    let nf = n as f64;
    let ma = a[..n].iter().sum::<f64>() / nf;
    let mb = b[..n].iter().sum::<f64>() / nf;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a[..n].iter().zip(&b[..n]) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma).powi(2);
        sbb += (y - mb).powi(2);
    }
    if saa == 0.0 || sbb == 0.0 {
        return 0.0;
    }
    sab / (saa * sbb).sqrt()
}

/// Average ranks (1-based) of `scores`, ties sharing the mean of their ranks.
fn average_ranks(scores: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0f64; scores.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = r;
        }
        i = j + 1;
    }
    ranks
}

/// ROC AUC of `scores` (higher = more anomalous) for `labels` (true = anomalous), tie-aware
/// through average ranks (the Mann–Whitney form, as scikit-learn's `roc_auc_score`); None
/// unless both classes are present.
pub fn auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let pos = labels[..n].iter().filter(|&&l| l).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let ranks = average_ranks(&scores[..n]);
    let sum_pos: f64 = labels[..n]
        .iter()
        .zip(&ranks)
        .filter(|(l, _)| **l)
        .map(|(_, r)| r)
        .sum();
    let (p, q) = (pos as f64, neg as f64);
    Some((sum_pos - p * (p + 1.0) / 2.0) / (p * q))
}

/// Cumulative (true positives, false positives) after each distinct score, highest first
/// (tied scores are taken together): the operating points of every threshold.
fn operating_points(scores: &[f64], labels: &[bool]) -> Vec<(usize, usize)> {
    let n = scores.len().min(labels.len());
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut out = Vec::new();
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j < n && scores[idx[j]] == scores[idx[i]] {
            if labels[idx[j]] {
                tp += 1;
            } else {
                fp += 1;
            }
            j += 1;
        }
        out.push((tp, fp));
        i = j;
    }
    out
}

/// ROC curve of `scores` (higher = more anomalous) for `labels`: (false-positive rate,
/// true-positive rate) points from (0, 0) to (1, 1), one per distinct score (tied scores move
/// together, so the trapezoid area equals [`auc`]); None unless both classes are present.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Option<Vec<(f64, f64)>> {
    let n = scores.len().min(labels.len());
    let pos = labels[..n].iter().filter(|&&l| l).count();
    let neg = n - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut out = vec![(0.0, 0.0)];
    out.extend(
        operating_points(scores, labels)
            .into_iter()
            .map(|(tp, fp)| (fp as f64 / neg as f64, tp as f64 / pos as f64)),
    );
    Some(out)
}

/// Average precision (area under the precision–recall curve as scikit-learn's
/// `average_precision_score`: Σ (Rₙ − Rₙ₋₁)·Pₙ over distinct thresholds, ties taken together);
/// None without a positive.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    let n = scores.len().min(labels.len());
    let pos = labels[..n].iter().filter(|&&l| l).count();
    if pos == 0 {
        return None;
    }
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for (tp, fp) in operating_points(scores, labels) {
        let recall = tp as f64 / pos as f64;
        ap += (recall - prev_recall) * tp as f64 / (tp + fp) as f64;
        prev_recall = recall;
    }
    Some(ap)
}

/// Median of `v` (mean of the two middle values for an even count); None when empty.
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len().is_multiple_of(2) {
        (s[m - 1] + s[m]) / 2.0
    } else {
        s[m]
    })
}

/// Median absolute deviation from the median (unscaled); None when empty.
pub fn mad(v: &[f64]) -> Option<f64> {
    let m = median(v)?;
    let dev: Vec<f64> = v.iter().map(|x| (x - m).abs()).collect();
    median(&dev)
}

/// Min–max normalisation to [0, 1]; a constant series maps to 0.
pub fn min_max(v: &[f64]) -> Vec<f64> {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if hi > lo {
        v.iter().map(|x| (x - lo) / (hi - lo)).collect()
    } else {
        vec![0.0; v.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_matches_hand_computed_values_with_ties() {
        assert_eq!(auc(&[0.1, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.9, 0.1], &[false, true]), Some(0.0));
        // All tied: 0.5.
        assert_eq!(auc(&[0.5, 0.5, 0.5], &[false, true, true]), Some(0.5));
        // scikit-learn: roc_auc_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.75.
        assert_eq!(
            auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        // A tie across classes counts one half: pairs (neg, pos) = (0.2, 0.5) win, (0.5, 0.5)
        // half, (0.2, 0.7) win, (0.5, 0.7) win -> 3.5 / 4.
        assert_eq!(
            auc(&[0.2, 0.5, 0.5, 0.7], &[false, false, true, true]),
            Some(0.875)
        );
        assert_eq!(auc(&[0.1, 0.2], &[true, true]), None);
        assert_eq!(auc(&[], &[]), None);
    }

    #[test]
    fn roc_curve_steps_over_ties_and_integrates_to_the_auc() {
        // Scores 0.8 (pos), 0.5 (pos, neg tied), 0.2 (neg): (0,0) (0,½) (½,1) (1,1).
        let s = [0.2, 0.5, 0.5, 0.8];
        let l = [false, false, true, true];
        let roc = roc_curve(&s, &l).unwrap();
        assert_eq!(roc, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 1.0), (1.0, 1.0)]);
        let area: f64 = roc
            .windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum();
        assert_eq!(Some(area), auc(&s, &l));
        assert_eq!(roc_curve(&[0.1], &[true]), None);
    }

    #[test]
    fn average_precision_matches_scikit_learn() {
        // average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) = 0.8333...
        let ap = average_precision(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap();
        assert!((ap - 5.0 / 6.0).abs() < 1e-12, "{ap}");
        // Perfect ranking: 1.
        assert_eq!(average_precision(&[0.9, 0.1], &[true, false]), Some(1.0));
        // All tied: the positive rate.
        let ap = average_precision(&[0.5; 4], &[true, false, false, false]).unwrap();
        assert!((ap - 0.25).abs() < 1e-12);
        assert_eq!(average_precision(&[0.5], &[false]), None);
    }

    #[test]
    fn pearson_median_mad() {
        // x = 1, 2, 3; y = 2, 4, 6.5: r = 4.5 / √(2 · 10.1667) = 0.99795.
        assert!((pearson(&[1.0, 2.0, 3.0], &[2.0, 4.0, 6.5]) - 0.99795).abs() < 1e-4);
        assert_eq!(pearson(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
        assert_eq!(pearson(&[1.0], &[1.0]), 0.0);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        // |x − 2| = 1, 1, 0, 2, 6 -> median 1.
        assert_eq!(mad(&[1.0, 3.0, 2.0, 4.0, 8.0]), Some(1.0));
    }
}
