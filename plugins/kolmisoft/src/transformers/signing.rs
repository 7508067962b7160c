//! The request `hash` of the Kolmisoft API.
//!
//! Kolmisoft's hash construction (wiki "MOR API hash construction", `providers.md` section 3):
//! concatenate the **values** of the hash-eligible parameters being sent (no names, no
//! separators), append the API Secret Key, and send `lowercase_hex(SHA1(string))`. The username
//! `u` and `hash` itself are never hashed. Older wiki revisions require the parameters in the order
//! the method's page lists them; newer ones accept any order. The listed order satisfies both, so
//! it is the only order this plugin uses.

use sha1::{Digest, Sha1};

/// The parameters of `payments_get` that take part in the hash, in the order the document lists
/// them. This order is what makes the hash reproducible on the server.
pub const HASHED_PARAMETERS: [&str; 9] = [
    "user_id_s",
    "from_s",
    "till_s",
    "username_s",
    "first_name_s",
    "last_name_s",
    "amount_min_s",
    "amount_max_s",
    "currency_s",
];

/// SHA1 over `values` concatenated in the order given, followed by `secret_key`, as lowercase hex.
pub fn hash_values<'a>(values: impl IntoIterator<Item = &'a str>, secret_key: &str) -> String {
    let mut hasher = Sha1::new();
    for value in values {
        hasher.update(value.as_bytes());
    }
    hasher.update(secret_key.as_bytes());
    hex::encode(hasher.finalize())
}

/// The `hash` for the parameters a request sends: the hashed ones are taken in the document's
/// order whatever order `sent` lists them in, and every other parameter (`u`) is left out.
pub fn payments_get_hash(sent: &[(&str, &str)], secret_key: &str) -> String {
    let values = HASHED_PARAMETERS.iter().filter_map(|wanted| {
        sent.iter()
            .find(|(name, _)| name == wanted)
            .map(|(_, value)| *value)
    });
    hash_values(values, secret_key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The document's own example: `s_user_id = 123`, API Secret Key `456789`.
    #[test]
    fn the_documents_example_is_reproduced_exactly() {
        assert_eq!(
            payments_get_hash(&[("u", "username"), ("user_id_s", "123")], "456789"),
            "f7c3bc1d808e04732adf679965ccc34ca7ae3441"
        );
    }

    /// The wiki's hash-construction example (`providers.md`: verified locally).
    #[test]
    fn the_wikis_generic_example_is_reproduced() {
        assert_eq!(
            hash_values(["123", "1252454580", "answered"], "Very Sercet Key"),
            "b93c35d5c6183288322122561a3da7e09abb63b7"
        );
    }

    #[test]
    fn the_documents_order_wins_over_the_order_given() {
        let in_document_order = payments_get_hash(
            &[
                ("user_id_s", "7"),
                ("from_s", "100"),
                ("till_s", "200"),
                ("currency_s", "USD"),
            ],
            "key",
        );
        let shuffled = payments_get_hash(
            &[
                ("currency_s", "USD"),
                ("till_s", "200"),
                ("u", "admin"),
                ("from_s", "100"),
                ("user_id_s", "7"),
            ],
            "key",
        );
        assert_eq!(in_document_order, shuffled);
        assert_eq!(
            in_document_order,
            hash_values(["7", "100", "200", "USD"], "key")
        );
    }
}
