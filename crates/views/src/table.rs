//! A bordered text table drawn the way patronictl's `PrettyTable` subclass draws it: `+---+`
//! borders, one space of padding, a title embedded in the top border, and a rule between
//! every row as soon as one cell spans several lines.

/// How the text of a column sits in its cell (the header follows the column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Align {
    Left,
    Right,
}

/// A table ready to draw: column names with their alignment, and rows of cell texts.
pub(crate) struct Table {
    /// Written over the start of the top border (patronictl: ` Cluster: name (sysid) `).
    pub title: Option<String>,
    pub columns: Vec<(String, Align)>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as lines of text, each ending with a newline.
    pub fn render(&self) -> String {
        let widths = self.widths();
        let rule = rule(&widths);
        // PrettyTable switches from a frame to a rule after every row when a cell has
        // several lines, so that multi-line rows stay readable.
        let every_row = self.rows.iter().flatten().any(|cell| cell.contains('\n'));

        let mut out = String::new();
        let top = match &self.title {
            Some(title) => embed_title(&rule, title),
            None => rule.clone(),
        };
        push_line(&mut out, &top);
        let header: Vec<String> = self.columns.iter().map(|(name, _)| name.clone()).collect();
        self.push_row(&mut out, &header, &widths);
        push_line(&mut out, &rule);
        for row in &self.rows {
            self.push_row(&mut out, row, &widths);
            if every_row {
                push_line(&mut out, &rule);
            }
        }
        if !every_row || self.rows.is_empty() {
            push_line(&mut out, &rule);
        }
        out
    }

    fn widths(&self) -> Vec<usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let cells = self.rows.iter().filter_map(|row| row.get(i));
                cells
                    .flat_map(|cell| cell.split('\n'))
                    .map(text_width)
                    .chain(std::iter::once(text_width(name)))
                    .max()
                    .unwrap_or(0)
            })
            .collect()
    }

    fn push_row(&self, out: &mut String, row: &[String], widths: &[usize]) {
        let lines: Vec<Vec<&str>> = (0..widths.len())
            .map(|i| {
                row.get(i)
                    .map(|c| c.split('\n').collect())
                    .unwrap_or_else(|| vec![""])
            })
            .collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(1);
        for line_no in 0..height {
            let mut line = String::from("|");
            for (i, width) in widths.iter().enumerate() {
                let text = lines[i].get(line_no).copied().unwrap_or("");
                let pad = " ".repeat(width.saturating_sub(text_width(text)));
                line.push(' ');
                match self.columns[i].1 {
                    Align::Left => {
                        line.push_str(text);
                        line.push_str(&pad);
                    }
                    Align::Right => {
                        line.push_str(&pad);
                        line.push_str(text);
                    }
                }
                line.push_str(" |");
            }
            push_line(out, &line);
        }
    }
}

fn text_width(text: &str) -> usize {
    text.chars().count()
}

fn rule(widths: &[usize]) -> String {
    let mut line = String::from("+");
    for width in widths {
        line.push_str(&"-".repeat(width + 2));
        line.push('+');
    }
    line
}

/// patronictl's `__build_header`: the title replaces the border right after its first
/// `+`, cut so that the last character of the border always stays.
fn embed_title(rule: &str, title: &str) -> String {
    let rule: Vec<char> = rule.chars().collect();
    let room = rule.len().saturating_sub(2);
    let title: Vec<char> = title.chars().take(room).collect();
    let mut line = String::new();
    line.extend(rule.first());
    line.extend(title.iter());
    line.extend(rule.iter().skip(1 + title.len()));
    line
}

fn push_line(out: &mut String, line: &str) {
    out.push_str(line);
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(title: Option<&str>, rows: Vec<Vec<&str>>) -> Table {
        Table {
            title: title.map(str::to_string),
            columns: vec![
                ("Name".to_string(), Align::Left),
                ("N".to_string(), Align::Right),
            ],
            rows: rows
                .into_iter()
                .map(|r| r.into_iter().map(str::to_string).collect())
                .collect(),
        }
    }

    #[test]
    fn draws_frame_with_alignment() {
        let t = table(None, vec![vec!["a", "10"], vec!["long name", "1"]]);
        let want = "\
+-----------+----+
| Name      |  N |
+-----------+----+
| a         | 10 |
| long name |  1 |
+-----------+----+
";
        assert_eq!(t.render(), want);
    }

    #[test]
    fn title_is_embedded_in_the_top_border_and_cut_when_too_long() {
        let t = table(Some(" T: x "), vec![vec!["abcdefgh", "1"]]);
        assert!(
            t.render().starts_with("+ T: x ----+---+\n"),
            "{}",
            t.render()
        );
        let t = table(Some(" a very long title indeed "), vec![vec!["a", "1"]]);
        assert!(t.render().starts_with("+ a very lo+\n"), "{}", t.render());
    }

    #[test]
    fn multi_line_cells_put_a_rule_after_every_row() {
        let t = table(None, vec![vec!["a\nbb", "1"], vec!["c", "2"]]);
        let want = "\
+------+---+
| Name | N |
+------+---+
| a    | 1 |
| bb   |   |
+------+---+
| c    | 2 |
+------+---+
";
        assert_eq!(t.render(), want);
    }
}
