//! Reading a dataset from a CSV file: a header row of column names, then one row per record
//! (the layout pandas' `to_csv(index=False)` writes), numeric columns read by name.
//!
//! The format is the plain one: fields separated by commas, one record per line (`\n` or
//! `\r\n`), surrounding spaces trimmed, a field may be wrapped in double quotes (which are
//! removed), blank lines skipped, a UTF-8 byte-order mark ignored. Quoted fields holding
//! commas or line breaks are not supported: they give a row with the wrong number of fields,
//! which is an error naming the line. Every file, however malformed, gives a [`Csv`] or an
//! [`Error::File`] naming the line and column, never a panic.
//!
//! ```
//! use eddy_nn::csv::Csv;
//!
//! let csv = Csv::parse(b"date,sunspots\n1749-01,58.0\n1749-02,62.6\n", "inline.csv")?;
//! assert_eq!(csv.header(), ["date", "sunspots"]);
//! assert_eq!(csv.column::<f64>("sunspots")?, vec![58.0, 62.6]);
//! assert!(csv.column::<f64>("date").is_err()); // "1749-01" is not a number
//! let x = csv.columns::<f32>(&["sunspots"])?; // [rows, 1]
//! assert_eq!(x.shape(), &[2, 1]);
//! # Ok::<(), eddy_tape::Error>(())
//! ```

use eddy_tape::{Error, Float, Result};
use ndarray::ArrayD;
use std::collections::HashSet;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The header and cells of a CSV file (the text is kept; cells are ranges into it).
#[derive(Debug, Clone)]
pub struct Csv {
    /// Where it was read from (for error messages).
    pub path: PathBuf,
    text: String,
    header: Vec<String>,
    /// Each row's cells (`header.len()` per row), as byte ranges of `text`.
    cells: Vec<Range<usize>>,
    /// The 1-based line number of each row.
    lines: Vec<usize>,
}

impl Csv {
    /// Reads a CSV file.
    ///
    /// # Errors
    /// [`Error::File`] if it cannot be read, or see [`Csv::parse`].
    pub fn read(path: impl AsRef<Path>) -> Result<Csv> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::file(path, format!("cannot read: {e}")))?;
        Csv::parse(&bytes, path)
    }

    /// Parses the bytes of a CSV file; `path` is only for messages.
    ///
    /// # Errors
    /// [`Error::File`] naming the line for text that is not UTF-8, a missing or empty header,
    /// an empty or repeated column name, or a row whose number of fields differs from the
    /// header's.
    pub fn parse(bytes: &[u8], path: impl AsRef<Path>) -> Result<Csv> {
        let path = path.as_ref();
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let line = 1 + bytes[..e.valid_up_to()].iter().filter(|&&b| b == b'\n').count();
            Error::file(path, format!("line {line}: not UTF-8 text ({e})"))
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text).to_string();
        let mut header: Option<Vec<String>> = None;
        let mut cells = Vec::new();
        let mut lines = Vec::new();
        let mut offset = 0;
        for (i, raw) in text.split('\n').enumerate() {
            let line_start = offset;
            offset += raw.len() + 1;
            let line = raw.strip_suffix('\r').unwrap_or(raw);
            if line.trim().is_empty() {
                continue;
            }
            let number = i + 1;
            let mut fields = Vec::new();
            let mut start = line_start;
            for field in line.split(',') {
                fields.push(trim_field(&text, start..start + field.len()));
                start += field.len() + 1;
            }
            match &header {
                None => {
                    let names: Vec<String> = fields.iter().map(|r| text[r.clone()].to_string()).collect();
                    let mut seen = HashSet::new();
                    for (col, name) in names.iter().enumerate() {
                        if name.is_empty() {
                            return Err(Error::file(
                                path,
                                format!("line {number}: the header's column {} has no name", col + 1),
                            ));
                        }
                        if !seen.insert(name.as_str()) {
                            return Err(Error::file(
                                path,
                                format!("line {number}: the header names column {} twice", show(name)),
                            ));
                        }
                    }
                    header = Some(names);
                }
                Some(names) => {
                    if fields.len() != names.len() {
                        return Err(Error::file(
                            path,
                            format!(
                                "line {number}: {} field(s), the header has {} (quoted commas are not supported)",
                                fields.len(),
                                names.len()
                            ),
                        ));
                    }
                    cells.extend(fields);
                    lines.push(number);
                }
            }
        }
        let header = header.ok_or_else(|| Error::file(path, "empty file: expected a header row"))?;
        Ok(Csv {
            path: path.to_path_buf(),
            text,
            header,
            cells,
            lines,
        })
    }

    /// The column names, in order.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The number of rows (records after the header).
    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// The text of row `row`'s cell in column `col`, if both exist.
    pub fn cell(&self, row: usize, col: usize) -> Option<&str> {
        if row >= self.rows() || col >= self.header.len() {
            return None;
        }
        Some(&self.text[self.cells[row * self.header.len() + col].clone()])
    }

    /// The index of column `name`.
    ///
    /// # Errors
    /// [`Error::File`] if there is no such column (the message lists the columns).
    pub fn index(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                &self.path,
                format!("no column {}; the columns are {:?}", show(name), self.header),
            )
        })
    }

    /// Column `name` as numbers.
    ///
    /// # Errors
    /// [`Error::File`] if there is no such column, or naming the line of a cell that is empty
    /// or not a number (`NaN` and `inf` are numbers, as Rust and pandas read them).
    pub fn column<F: Float>(&self, name: &str) -> Result<Vec<F>> {
        let col = self.index(name)?;
        (0..self.rows()).map(|row| self.number(row, col)).collect()
    }

    /// The columns `names` as a `[rows, names.len()]` array (features side by side).
    ///
    /// # Errors
    /// As [`Csv::column`].
    pub fn columns<F: Float>(&self, names: &[&str]) -> Result<ArrayD<F>> {
        let cols = names.iter().map(|n| self.index(n)).collect::<Result<Vec<_>>>()?;
        let mut values = Vec::with_capacity(self.rows().saturating_mul(cols.len()));
        for row in 0..self.rows() {
            for &col in &cols {
                values.push(self.number(row, col)?);
            }
        }
        ArrayD::from_shape_vec(vec![self.rows(), cols.len()], values)
            .map_err(|e| Error::file(&self.path, format!("columns: {e}")))
    }

    fn number<F: Float>(&self, row: usize, col: usize) -> Result<F> {
        let cell = self.cell(row, col).unwrap_or_default();
        let at = || format!("line {}, column {}", self.lines[row], show(&self.header[col]));
        if cell.is_empty() {
            return Err(Error::file(&self.path, format!("{}: empty cell", at())));
        }
        cell.parse::<f64>()
            .map(F::of)
            .map_err(|_| Error::file(&self.path, format!("{}: {} is not a number", at(), show(cell))))
    }
}

/// `range` of `text` without surrounding spaces and one pair of surrounding double quotes.
fn trim_field(text: &str, range: Range<usize>) -> Range<usize> {
    let field = &text[range.clone()];
    let lead = field.len() - field.trim_start().len();
    let trimmed = field.trim();
    let mut r = range.start + lead..range.start + lead + trimmed.len();
    if trimmed.len() >= 2 && trimmed.starts_with('"') && trimmed.ends_with('"') {
        r = r.start + 1..r.end - 1;
    }
    r
}

/// A cell or name for a message: quoted, at most 40 characters.
fn show(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_columns_with_crlf_quotes_bom_and_blank_lines() {
        let text = "\u{feff}a, \"b\"\r\n1, 2\r\n\r\n \"3\",4e0\r\n";
        let csv = Csv::parse(text.as_bytes(), "t.csv").unwrap();
        assert_eq!(csv.header(), ["a", "b"]);
        assert_eq!(csv.column::<f64>("a").unwrap(), vec![1.0, 3.0]);
        assert_eq!(csv.column::<f64>("b").unwrap(), vec![2.0, 4.0]);
        assert_eq!(csv.columns::<f32>(&["b", "a"]).unwrap().shape(), &[2, 2]);
    }

    #[test]
    fn malformed_files_are_errors_naming_the_line() {
        let err = |b: &[u8]| Csv::parse(b, "t.csv").unwrap_err().to_string();
        assert!(err(b"").contains("empty file"));
        assert!(err(b"a,b\n1\n").contains("line 2: 1 field(s), the header has 2"));
        assert!(err(b"a,a\n").contains("names column \"a\" twice"));
        assert!(err(b"a,\n").contains("column 2 has no name"));
        assert!(err(b"a\n1\n\xff\n").contains("line 3: not UTF-8"));
        let csv = Csv::parse(b"a,b\n1,\n", "t.csv").unwrap();
        assert!(csv
            .column::<f64>("b")
            .unwrap_err()
            .to_string()
            .contains("line 2, column \"b\": empty cell"));
        assert!(csv
            .column::<f64>("c")
            .unwrap_err()
            .to_string()
            .contains("no column \"c\""));
    }
}
