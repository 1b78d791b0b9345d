//! Finds the line of a field in YAML text.
//!
//! `serde_yaml` reports a line for syntax and type errors, but checks made
//! after deserializing (an impossible combination, a bad sweep value) only
//! know the field's path. This walks the text with the indentation rules a
//! hand-written workload follows: each path segment is a `key:` more indented
//! than the segment before it. Keys inside OMB's `producerConfig: |` property
//! strings are found as `key=`.

/// 1-based line of the field at `path`, or of its closest found ancestor.
pub fn locate(text: &str, path: &[&str]) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut best = None;
    let mut from = 0;
    let mut min_indent: isize = -1;
    for segment in path {
        match find_key(&lines, from, min_indent, segment) {
            Some((line, indent)) => {
                best = Some(line + 1);
                from = line + 1;
                min_indent = indent as isize;
            }
            None => {
                // Dotted Kafka property names may be split as `producer.linger.ms`;
                // a property line `linger.ms=5` inside a block string also counts.
                if let Some(line) = find_property(&lines, from, segment) {
                    return Some(line + 1);
                }
                return best;
            }
        }
    }
    best
}

fn find_key(lines: &[&str], from: usize, min_indent: isize, key: &str) -> Option<(usize, usize)> {
    for (i, line) in lines.iter().enumerate().skip(from) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if min_indent >= 0 && (indent as isize) <= min_indent {
            // Left the parent block.
            return None;
        }
        let body = trimmed.trim_start_matches("- ");
        for quoted in [
            format!("{key}:"),
            format!("\"{key}\":"),
            format!("'{key}':"),
        ] {
            if body.starts_with(&quoted) {
                return Some((i, indent));
            }
        }
    }
    None
}

fn find_property(lines: &[&str], from: usize, key: &str) -> Option<usize> {
    let prefix = format!("{key}=");
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.trim_start().starts_with(&prefix))
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "name: x\n# comment\nproducer:\n  linger.ms: 5\n  acks: all\nconsumer:\n  acks: 1\nsweep:\n  \"batch.size\": [1, 2]\nproducerConfig: |\n  retries=3\n";

    #[test]
    fn finds_nested_keys() {
        assert_eq!(locate(TEXT, &["name"]), Some(1));
        assert_eq!(locate(TEXT, &["producer", "acks"]), Some(5));
        assert_eq!(locate(TEXT, &["consumer", "acks"]), Some(7));
        assert_eq!(locate(TEXT, &["sweep", "batch.size"]), Some(9));
    }

    #[test]
    fn falls_back_to_parent_and_properties() {
        assert_eq!(locate(TEXT, &["producer", "nope"]), Some(3));
        assert_eq!(locate(TEXT, &["producerConfig", "retries"]), Some(11));
        assert_eq!(locate(TEXT, &["missing"]), None);
    }
}
