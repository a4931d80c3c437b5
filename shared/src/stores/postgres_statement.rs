//! Statements sent as Postgres's unnamed statement, with their parameters'
//! types declared: what works through PgBouncer in transaction pooling
//! mode.
//!
//! A named prepared statement lives in one server session. PgBouncer in
//! transaction mode (Debian's 1.18 keeps no prepared statement for its
//! clients) hands each transaction, and each statement outside one, to
//! whichever server connection is free, so a statement prepared on one is
//! executed on another: `prepared statement "s11" does not exist`. The
//! unnamed statement is parsed, bound and executed in one exchange
//! (`Parse`/`Bind`/`Describe`/`Execute`/`Sync`, one round trip, as a cached
//! prepared statement's `Bind`/`Execute`/`Sync`), so it never outlives the
//! exchange that made it. tokio-postgres sends it with `query_typed`, which
//! needs each parameter's type up front: a [`Sql`] carries them beside its
//! text. Like any other request, it goes out when its future is first
//! polled, so statements still pipeline.
//!
//! The price is that Postgres parses and plans every execution (the
//! README's "PgBouncer" section has the figures measured here); every
//! statement of the request path pays it, PgBouncer or not, so that there
//! is one way statements are sent and it is the one tested.

use std::pin::pin;

use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, Row};

/// The parameters of a statement, in `$n` order.
pub type Params<'a> = [&'a (dyn ToSql + Sync)];
/// The parameters of a statement with their types, in `$n` order, for
/// `query_typed` and [`execute_typed`].
pub type TypedParams<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// A statement's text and its parameters' types, `$1` first.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    text: &'static str,
    param_types: &'static [Type],
}

impl Sql {
    /// `text`, whose parameters `$1`, `$2`, ... have `param_types`.
    pub const fn new(text: &'static str, param_types: &'static [Type]) -> Self {
        Self { text, param_types }
    }

    /// The statement's text.
    pub fn text(&self) -> &'static str {
        self.text
    }

    /// Every row the statement answers.
    pub async fn query(&self, client: &Client, params: &Params<'_>) -> Result<Vec<Row>, Error> {
        client.query_typed(self.text, &self.typed(params)).await
    }

    /// The one row the statement answers, or none; more is an error.
    pub async fn query_opt(
        &self,
        client: &Client,
        params: &Params<'_>,
    ) -> Result<Option<Row>, Error> {
        client.query_typed_opt(self.text, &self.typed(params)).await
    }

    /// The one row the statement answers; none or more is an error.
    pub async fn query_one(&self, client: &Client, params: &Params<'_>) -> Result<Row, Error> {
        client.query_typed_one(self.text, &self.typed(params)).await
    }

    /// How many rows the statement changed.
    pub async fn execute(&self, client: &Client, params: &Params<'_>) -> Result<u64, Error> {
        execute_typed(client, self.text, &self.typed(params)).await
    }

    /// Each parameter with its declared type.
    fn typed<'a>(&self, params: &'a Params<'a>) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        debug_assert_eq!(
            params.len(),
            self.param_types.len(),
            "the parameters of {}",
            self.text
        );
        params
            .iter()
            .copied()
            .zip(self.param_types.iter().cloned())
            .collect()
    }
}

/// `query_typed` for a statement that writes: how many rows it changed
/// (tokio-postgres has no `execute_typed`).
pub async fn execute_typed(
    client: &Client,
    text: &str,
    params: &TypedParams<'_>,
) -> Result<u64, Error> {
    let typed = params.iter().map(|(value, ty)| (*value, ty.clone()));
    let mut rows = pin!(client.query_typed_raw(text, typed).await?);
    while rows.try_next().await?.is_some() {}
    Ok(rows.rows_affected().unwrap_or_default())
}
