//! Text a user typed, as portcullis shows it back: escaped, so it cannot forge log lines or
//! `check` output, and matched to the name it most likely meant ("did you mean …?") for the
//! configuration's keys and the injector's annotations.

/// Escapes control characters so input copied into a log line cannot forge new lines.
pub fn sanitize(input: &str) -> String {
    const MAX: usize = 256;
    let mut out = String::with_capacity(input.len().min(MAX));
    for c in input.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// The known name closest to `typed`, if it is close enough to be a likely typo: at most three
/// edits, and fewer than half its length (`bogus` is not a typo of `log`).
pub fn nearest<'a>(typed: &str, known: &[&'a str]) -> Option<&'a str> {
    let most = 3.min(typed.chars().count().saturating_sub(1) / 2);
    known
        .iter()
        .map(|k| (edit_distance(typed, k), *k))
        .filter(|(d, _)| *d <= most)
        .min()
        .map(|(_, k)| k)
}

/// Levenshtein distance, one row at a time.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_are_suggested_and_far_ones_not() {
        let known = ["cookie_name", "cookie_domain", "same_site"];
        assert_eq!(nearest("cookie_nmae", &known), Some("cookie_name"));
        assert_eq!(nearest("cookie_domian", &known), Some("cookie_domain"));
        assert_eq!(nearest("samesite", &known), Some("same_site"));
        assert_eq!(nearest("redis", &known), None);
        assert_eq!(nearest("bogus", &["log", "tls"]), None);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
