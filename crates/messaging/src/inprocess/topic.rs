//! Topic-exchange matching, as RabbitMQ does it: routing keys and binding patterns are words
//! separated by dots; in a pattern `*` stands for exactly one word and `#` for zero or more.

/// Whether a message published with `routing_key` reaches a queue bound with `pattern`.
pub(crate) fn matches(pattern: &str, routing_key: &str) -> bool {
    let pattern: Vec<&str> = pattern.split('.').collect();
    let key: Vec<&str> = routing_key.split('.').collect();
    words_match(&pattern, &key)
}

fn words_match(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skipped| words_match(rest, &key[skipped..])),
        Some((&"*", rest)) => !key.is_empty() && words_match(rest, &key[1..]),
        Some((word, rest)) => key.first() == Some(word) && words_match(rest, &key[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn matches_like_a_topic_exchange() {
        assert!(matches("order.created", "order.created"));
        assert!(!matches("order.created", "order.processed"));
        assert!(!matches("order.created", "order.created.v2"));
        assert!(matches("order.*", "order.created"));
        assert!(!matches("order.*", "order"));
        assert!(!matches("order.*", "order.created.v2"));
        assert!(matches("order.#", "order"));
        assert!(matches("order.#", "order.created.v2"));
        assert!(matches("#", "anything.at.all"));
        assert!(matches("*.created", "order.created"));
        assert!(matches("#.created", "shop.order.created"));
        assert!(!matches("#.created", "order.processed"));
    }
}
