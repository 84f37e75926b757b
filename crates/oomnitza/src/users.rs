//! Reading users (`GET /api/v3/users`) with Oomnitza's SQL-like filters, and checking that the
//! configured credentials work.

use serde_json::Value;

use crate::client::OomnitzaClient;
use crate::error::Error;

impl OomnitzaClient {
    /// Users matching `filter` (for example `email eq 'ada@example.com'`; empty for all), at most
    /// `limit` of them after skipping `skip`, with Oomnitza's lower-case attribute names.
    pub async fn find_users(
        &self,
        filter: &str,
        limit: u32,
        skip: u32,
    ) -> Result<Vec<Value>, Error> {
        let what = if filter.is_empty() {
            "reading users".to_owned()
        } else {
            format!("reading users matching `{filter}`")
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
        self.decode(&what, &reply.body)
    }

    /// Checks the credentials with a cheap authenticated read (one user). A bad token gives
    /// [`Unauthorized`](crate::ErrorKind::Unauthorized), with status 401 for bad credentials and
    /// 403 for a token without rights.
    pub async fn check_auth(&self) -> Result<(), Error> {
        let url = self.url(&["api", "v3", "users"], &[("limit", "1")]);
        self.send_retrying("checking the credentials", &[], |http| {
            http.get(url.clone())
        })
        .await?;
        Ok(())
    }
}
