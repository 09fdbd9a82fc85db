//! The Prometheus text a `/metrics` endpoint answers (OpenMetrics or the older text format): the
//! metric families it declares, the samples it carries, and whether a scraper could parse it.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    pub families: BTreeMap<String, String>,
    /// The metric name of every sample.
    pub samples: BTreeSet<String>,
}

impl Exposition {
    /// Parses an exposition; the error names the first line a scraper would reject.
    pub fn parse(text: &str) -> Result<Exposition, String> {
        let mut exposition = Exposition::default();
        for (number, line) in text.lines().enumerate() {
            let bad = |why: &str| format!("line {}: {why}: {line:?}", number + 1);
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.split_whitespace();
                if words.next() == Some("TYPE") {
                    match (words.next(), words.next()) {
                        (Some(family), Some(kind)) if is_metric_name(family) => {
                            exposition.families.insert(family.to_owned(), kind.to_owned());
                        }
                        _ => return Err(bad("malformed TYPE line")),
                    }
                }
                continue;
            }
            let name_end = line.find(['{', ' ']).ok_or_else(|| bad("no value"))?;
            let name = &line[..name_end];
            if !is_metric_name(name) {
                return Err(bad("invalid metric name"));
            }
            let rest = if line[name_end..].starts_with('{') {
                let close = label_set_end(&line[name_end..]).ok_or_else(|| bad("unterminated labels"))?;
                &line[name_end + close + 1..]
            } else {
                &line[name_end..]
            };
            let value = rest.split_whitespace().next().ok_or_else(|| bad("no value"))?;
            value.parse::<f64>().map_err(|_| bad("value is not a number"))?;
            exposition.samples.insert(name.to_owned());
        }
        if exposition.families.is_empty() {
            return Err("no metric family declared (no # TYPE line)".into());
        }
        Ok(exposition)
    }

    /// Every name a query can select: the samples present, and the names each declared family
    /// produces (a labelled family has no sample until its first event).
    pub fn names(&self) -> BTreeSet<String> {
        let mut names = self.samples.clone();
        for (family, kind) in &self.families {
            names.extend(sample_names(family, kind));
        }
        names
    }
}

/// The sample names of a family of type `kind`, as OpenMetrics defines them (a counter family
/// `x` has samples `x_total`; the older text format names counters `x_total` already).
pub fn sample_names(family: &str, kind: &str) -> Vec<String> {
    let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
    match kind {
        "counter" if family.ends_with("_total") => vec![family.to_owned()],
        "counter" => with(&["_total", "_created"]),
        "histogram" => with(&["_bucket", "_sum", "_count", "_created"]),
        "gaugehistogram" => with(&["_bucket", "_gsum", "_gcount"]),
        "summary" => with(&["", "_sum", "_count", "_created"]),
        "info" => with(&["_info"]),
        _ => vec![family.to_owned()],
    }
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Index of the `}` closing the label set `text` starts with; label values may hold `}`.
fn label_set_end(text: &str) -> Option<usize> {
    let mut in_value = false;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_value => escaped = true,
            '"' => in_value = !in_value,
            '}' if !in_value => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_map_to_the_sample_names_queries_use() {
        let text = "# HELP http_requests HTTP requests answered.\n# TYPE http_requests counter\n\
            http_requests_total{method=\"GET\",route=\"/a}b\",status=\"200\"} 3\n\
            # TYPE latency_seconds histogram\n# UNIT latency_seconds seconds\n\
            latency_seconds_bucket{le=\"+Inf\"} 1\nlatency_seconds_sum 0.5\nlatency_seconds_count 1\n\
            # TYPE backlog gauge\nbacklog NaN\n# TYPE failures counter\n# EOF\n";
        let exposition = Exposition::parse(text).unwrap();
        let names = exposition.names();
        for name in ["http_requests_total", "latency_seconds_bucket", "latency_seconds_count", "backlog"] {
            assert!(names.contains(name), "{name}: {names:?}");
        }
        // Declared without samples yet: still a name Prometheus will see.
        assert!(names.contains("failures_total"));
        assert!(!exposition.samples.contains("failures_total"));
        assert!(!names.contains("http_requests"));
    }

    #[test]
    fn what_a_scraper_rejects_is_an_error() {
        assert!(Exposition::parse("").is_err());
        assert!(Exposition::parse("# TYPE a gauge\na{x=\"1\" 2\n").is_err());
        assert!(Exposition::parse("# TYPE a gauge\na one\n").is_err());
        assert!(Exposition::parse("# TYPE a gauge\n1a 1\n").is_err());
    }
}
