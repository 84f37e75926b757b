//! Reading users (`GET /api/v3/users`) with Oomnitza's SQL-like filters — one page, every page,
//! or every user holding one of many values of an attribute — and checking that the configured
//! credentials work, as Oomnitza's own connector does (`GET /api/v2/mappings?name=AuthTest`).
//!
//! Reading back what a run wrote is how a client learns what landed (a bulk `200` only means
//! accepted), so the bulk reads page with `limit`/`skip` and split long `IN [...]` lists into
//! requests whose URL stays short enough for proxies and servers.

use serde_json::Value;

use crate::client::{OomnitzaClient, encoded_len};
use crate::error::{Error, ErrorKind};

/// Longest URL the bulk reads send, in characters: a few hundred e-mail addresses per request,
/// and well under the 8 KiB many servers and proxies accept.
pub const MAX_URL_CHARS: usize = 6_000;

/// Most pages one read follows before giving up: ten million users at 1,000 a page, so that a
/// server which ignores `skip` cannot keep a client reading forever.
const MAX_PAGES: usize = 10_000;

/// Bulk field id → the attribute `GET /api/v3/users` shows it as: the documented system fields.
pub const SYSTEM_ATTRIBUTES: &[(&str, &str)] = &[
    ("USER", "username"),
    ("EMAIL", "email"),
    ("FIRST_NAME", "first_name"),
    ("LAST_NAME", "last_name"),
    ("POSITION", "position"),
    ("PERMISSIONS_ID", "role"),
    ("PHONE", "phone_number"),
    ("ADDRESS", "address"),
];

/// The user attributes read back ignoring letter case: Oomnitza publishes neither whether it
/// stores usernames and e-mails as sent nor whether its filters ignore case, so a user holding
/// `ada@example.com` is taken to hold `Ada@Example.com`.
pub const CASELESS_ATTRIBUTES: [&str; 2] = ["username", "email"];

/// `value` in lower case when `attribute` is one of [`CASELESS_ATTRIBUTES`] and that changes
/// it: the other spelling to ask for when reading users by `value`.
pub fn lower_spelling(attribute: &str, value: &str) -> Option<String> {
    if !CASELESS_ATTRIBUTES.contains(&attribute) {
        return None;
    }
    let lower = value.to_lowercase();
    (lower != value).then_some(lower)
}

/// The attribute a user read shows bulk field `field` as: a system field's documented name,
/// otherwise the id in lower case (how custom fields are read; not published).
pub fn read_attribute(field: &str) -> String {
    SYSTEM_ATTRIBUTES
        .iter()
        .find(|(id, _)| *id == field)
        .map_or_else(|| field.to_lowercase(), |(_, name)| (*name).to_owned())
}

/// Whether `field` is a documented system field (see [`SYSTEM_ATTRIBUTES`]).
pub fn is_system_field(field: &str) -> bool {
    SYSTEM_ATTRIBUTES.iter().any(|(id, _)| *id == field)
}

/// `value` as a quoted filter literal: `'o''brien@example.com'`.
pub fn filter_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl OomnitzaClient {
    /// Users matching `filter` (for example `email eq 'ada@example.com'`; empty for all), at most
    /// `limit` of them after skipping `skip`, with Oomnitza's lower-case attribute names.
    pub async fn find_users(
        &self,
        filter: &str,
        limit: u32,
        skip: u32,
    ) -> Result<Vec<Value>, Error> {
        let (what, body) = self.users_page(filter, limit, skip).await?;
        self.decode(&what, &body)
    }

    /// [`OomnitzaClient::find_users`] as the JSON text of the page, not decoded: for a caller
    /// that reads many pages and borrows from them instead of building a `Value` per attribute
    /// (it must treat text that does not decode as an invalid answer).
    pub async fn find_users_json(
        &self,
        filter: &str,
        limit: u32,
        skip: u32,
    ) -> Result<bytes::Bytes, Error> {
        Ok(self.users_page(filter, limit, skip).await?.1)
    }

    /// One page of users: what was asked (for errors) and the body.
    async fn users_page(
        &self,
        filter: &str,
        limit: u32,
        skip: u32,
    ) -> Result<(String, bytes::Bytes), Error> {
        let what = if filter.is_empty() {
            format!("reading users (limit {limit}, skip {skip})")
        } else {
            format!(
                "reading users matching `{}` (limit {limit}, skip {skip})",
                abbreviate(filter)
            )
        };
        let limit = limit.to_string();
        let skip = skip.to_string();
        let mut query = Vec::with_capacity(3);
        if !filter.is_empty() {
            query.push(("filter", filter));
        }
        query.push(("limit", limit.as_str()));
        query.push(("skip", skip.as_str()));
        let url = self.url(&["api", "v3", "users"], &query);
        let reply = self
            .send_retrying(&what, &[], |http| http.get(url.clone()))
            .await?;
        Ok((what, reply.body))
    }

    /// Every user matching `filter` (empty for all), read `page_size` at a time (at least 1)
    /// with `limit` and `skip` until an empty page. Users created or removed while the pages are
    /// read may be missed or seen twice, as with any offset paging.
    ///
    /// A short page does not end the list: Oomnitza publishes no largest page, and a server
    /// that answers fewer users than `limit` asks for would otherwise cut the list at its first
    /// page. Ending on an empty page costs one request per list.
    pub async fn find_all_users(&self, filter: &str, page_size: u32) -> Result<Vec<Value>, Error> {
        self.read_pages(filter, page_size, None).await
    }

    /// The pages of users matching `filter`, until an empty page, or — for a filter on the
    /// values of `all_found`, `(attribute, values)` — until a short page once every value was
    /// read as given.
    async fn read_pages(
        &self,
        filter: &str,
        page_size: u32,
        all_found: Option<(&str, &[&str])>,
    ) -> Result<Vec<Value>, Error> {
        let page_size = page_size.max(1);
        let mut users: Vec<Value> = Vec::new();
        let ignoring_skip = || {
            Error::new(
                ErrorKind::InvalidResponse,
                format!(
                    "Oomnitza at {} kept returning users after {MAX_PAGES} pages of {page_size}, \
                     or the same page again; it may be ignoring `skip`: read with a narrower \
                     filter",
                    self.host()
                ),
            )
        };
        // The first user of the last page: a server that ignores `skip` shows it again.
        let mut last_first: Option<Value> = None;
        for _ in 0..MAX_PAGES {
            let skip = u32::try_from(users.len()).unwrap_or(u32::MAX);
            let page = self.find_users(filter, page_size, skip).await?;
            let short = page.len() < page_size as usize;
            let Some(first) = page.first() else {
                return Ok(users);
            };
            if last_first.as_ref() == Some(first) {
                return Err(ignoring_skip());
            }
            last_first = Some(first.clone());
            users.extend(page);
            if short
                && let Some((attribute, values)) = all_found
                && all_read(&users, attribute, values)
            {
                return Ok(users);
            }
        }
        Err(ignoring_skip())
    }

    /// Every user whose `attribute` (a lower-case attribute name such as `email`, or a custom
    /// field's) has one of `values`: `attribute IN ['a', 'b', ...]`, with the values quoted,
    /// duplicates dropped, split so that each request's URL stays under [`MAX_URL_CHARS`], and
    /// each part paged `page_size` at a time. For a [caseless](CASELESS_ATTRIBUTES) attribute a
    /// value with capitals is also asked for in lower case ([`lower_spelling`]): Oomnitza
    /// publishes neither whether it keeps their case nor whether its filters ignore it, so the
    /// users read may hold either spelling. A value too long to fit in a request is
    /// [`Rejected`](ErrorKind::Rejected).
    pub async fn find_users_in<S: AsRef<str>>(
        &self,
        attribute: &str,
        values: &[S],
        page_size: u32,
    ) -> Result<Vec<Value>, Error> {
        let mut seen = std::collections::HashSet::new();
        // Each value with the literals it is asked by, kept in one request together.
        let asked: Vec<(&str, Vec<String>)> = values
            .iter()
            .map(AsRef::as_ref)
            .filter(|v| seen.insert(*v))
            .map(|value| {
                let mut literals = vec![filter_literal(value)];
                if let Some(lower) = lower_spelling(attribute, value) {
                    literals.push(filter_literal(&lower));
                }
                (value, literals)
            })
            .collect();
        // The URL without any value: base, path, the empty list, and the widest paging.
        let empty = self
            .url(
                &["api", "v3", "users"],
                &[
                    ("filter", &format!("{attribute} IN []")),
                    ("limit", &page_size.max(1).to_string()),
                    ("skip", &u32::MAX.to_string()),
                ],
            )
            .as_str()
            .len();
        let separator = encoded_len(", ");
        let mut users = Vec::new();
        let mut chunk: Vec<&(&str, Vec<String>)> = Vec::new();
        let mut length = empty;
        for entry in &asked {
            let (value, literals) = entry;
            let size = literals.iter().map(|l| encoded_len(l)).sum::<usize>()
                + separator * (literals.len() - 1);
            if empty + size > MAX_URL_CHARS {
                return Err(Error::new(
                    ErrorKind::Rejected,
                    format!(
                        "cannot read users by {attribute}: the value {} is too long for one \
                         request to Oomnitza at {}",
                        abbreviate(value),
                        self.host()
                    ),
                ));
            }
            if !chunk.is_empty() && length + separator + size > MAX_URL_CHARS {
                users.extend(self.find_chunk(attribute, &chunk, page_size).await?);
                chunk.clear();
                length = empty;
            }
            length += if chunk.is_empty() {
                size
            } else {
                separator + size
            };
            chunk.push(entry);
        }
        if !chunk.is_empty() {
            users.extend(self.find_chunk(attribute, &chunk, page_size).await?);
        }
        Ok(users)
    }

    /// The users holding `value` in `attribute`, read in one request of at most `limit` users:
    /// for a [caseless](CASELESS_ATTRIBUTES) attribute also in lower case ([`lower_spelling`]),
    /// with the users holding `value` as given first.
    pub async fn find_users_holding(
        &self,
        attribute: &str,
        value: &str,
        limit: u32,
    ) -> Result<Vec<Value>, Error> {
        let mut literals = vec![filter_literal(value)];
        if let Some(lower) = lower_spelling(attribute, value) {
            literals.push(filter_literal(&lower));
        }
        let filter = format!("{attribute} IN [{}]", literals.join(", "));
        let mut users = self.find_users(&filter, limit, 0).await?;
        // A stable sort: the users as Oomnitza listed them, those holding `value` as given first.
        users.sort_by_key(|user| user.get(attribute).and_then(Value::as_str) != Some(value));
        Ok(users)
    }

    /// Every user whose `attribute` is one of these values, asked by their literals. A short
    /// page ends the list once every value was read as given; a shorter one may be a server's
    /// own page limit, so the next page is read to tell (the usual case: every user is there,
    /// one request). A value read only in another spelling does not end it early: the user
    /// holding it as given may be on a later page.
    async fn find_chunk(
        &self,
        attribute: &str,
        chunk: &[&(&str, Vec<String>)],
        page_size: u32,
    ) -> Result<Vec<Value>, Error> {
        let literals: Vec<&str> = chunk
            .iter()
            .flat_map(|(_, literals)| literals.iter().map(String::as_str))
            .collect();
        let values: Vec<&str> = chunk.iter().map(|(value, _)| *value).collect();
        let filter = format!("{attribute} IN [{}]", literals.join(", "));
        self.read_pages(&filter, page_size, Some((attribute, &values)))
            .await
    }

    /// Checks the credentials the way Oomnitza's own connector does, with
    /// `GET /api/v2/mappings?name=AuthTest`, which needs no right to read users. A bad token
    /// gives [`Unauthorized`](crate::ErrorKind::Unauthorized), with status 401 for bad
    /// credentials and 403 for a token without rights.
    /// An `X-CSRF-Token` in the answer is echoed on the API token's later requests, as
    /// Oomnitza's connector does.
    pub async fn check_auth(&self) -> Result<(), Error> {
        let url = self.url(&["api", "v2", "mappings"], &[("name", "AuthTest")]);
        let reply = self
            .send_retrying("checking the credentials", &[], |http| {
                http.get(url.clone())
            })
            .await?;
        if let Some(csrf) = reply.csrf {
            self.adopt_csrf(csrf);
        }
        Ok(())
    }
}

/// The start of a long text, for messages.
fn abbreviate(text: &str) -> String {
    const SHOWN: usize = 120;
    match text.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// Whether `users` show every one of `values` for `attribute`, as given (a number or boolean
/// as its text).
fn all_read(users: &[Value], attribute: &str, values: &[&str]) -> bool {
    let shown: std::collections::HashSet<std::borrow::Cow<'_, str>> = users
        .iter()
        .filter_map(|user| match user.get(attribute)? {
            Value::String(text) => Some(std::borrow::Cow::Borrowed(text.as_str())),
            Value::Null => None,
            other => Some(std::borrow::Cow::Owned(other.to_string())),
        })
        .collect();
    values.iter().all(|value| shown.contains(*value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_username_or_email_with_capitals_has_a_lower_spelling() {
        assert_eq!(
            lower_spelling("email", "Ada@Example.com").as_deref(),
            Some("ada@example.com")
        );
        assert_eq!(lower_spelling("username", "ada@example.com"), None);
        assert_eq!(lower_spelling("6c1f0a2b", "a2G7E000000LlIDUA0"), None);
    }

    #[test]
    fn literals_double_their_quotes() {
        assert_eq!(
            filter_literal("o'brien@example.com"),
            "'o''brien@example.com'"
        );
        assert_eq!(filter_literal(""), "''");
    }

    #[test]
    fn long_texts_are_abbreviated_on_a_character_boundary() {
        let long = "é".repeat(200);
        let short = abbreviate(&long);
        assert_eq!(short.chars().count(), 121);
        assert_eq!(abbreviate("short"), "short");
    }
}
