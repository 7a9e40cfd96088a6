//! A unified diff of two texts, line by line (longest common subsequence), for
//! `edit-config` to show what is about to change. Configurations are small, so the quadratic
//! table is fine.

/// One line of the diff.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line<'a> {
    Same(&'a str),
    Removed(&'a str),
    Added(&'a str),
}

fn lines_diff<'a>(old: &[&'a str], new: &[&'a str]) -> Vec<Line<'a>> {
    let (n, m) = (old.len(), new.len());
    // lcs[i][j]: length of the LCS of old[i..] and new[j..].
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if old[i] == new[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n || j < m {
        if i < n && j < m && old[i] == new[j] {
            out.push(Line::Same(old[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push(Line::Removed(old[i]));
            i += 1;
        } else {
            out.push(Line::Added(new[j]));
            j += 1;
        }
    }
    out
}

/// A unified diff (`---`/`+++` headers, `-`/`+`/space lines, 3 lines of context per hunk);
/// empty when the texts are equal.
pub fn unified_diff(old: &str, new: &str, old_name: &str, new_name: &str) -> String {
    let old_lines: Vec<&str> = old.lines().collect();
    let new_lines: Vec<&str> = new.lines().collect();
    let diff = lines_diff(&old_lines, &new_lines);
    if diff.iter().all(|l| matches!(l, Line::Same(_))) {
        return String::new();
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = diff
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Line::Same(_)))
        .map(|(k, _)| k)
        .collect();
    // Group changes into hunks whose context overlaps.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &k in &changed {
        let start = k.saturating_sub(CONTEXT);
        let end = (k + CONTEXT + 1).min(diff.len());
        match hunks.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = format!("--- {old_name}\n+++ {new_name}\n");
    for (start, end) in hunks {
        // Line numbers (1-based) where the hunk starts in each text.
        let (mut old_no, mut new_no) = (1, 1);
        for line in &diff[..start] {
            match line {
                Line::Same(_) => {
                    old_no += 1;
                    new_no += 1;
                }
                Line::Removed(_) => old_no += 1,
                Line::Added(_) => new_no += 1,
            }
        }
        let body = &diff[start..end];
        let old_len = body.iter().filter(|l| !matches!(l, Line::Added(_))).count();
        let new_len = body
            .iter()
            .filter(|l| !matches!(l, Line::Removed(_)))
            .count();
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            if old_len == 0 { old_no - 1 } else { old_no },
            if new_len == 0 { new_no - 1 } else { new_no },
        ));
        for line in body {
            let (mark, text) = match line {
                Line::Same(t) => (' ', t),
                Line::Removed(t) => ('-', t),
                Line::Added(t) => ('+', t),
            };
            out.push(mark);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}
