//! How the request path's statements are sent: as cached named prepared
//! statements, or, behind a pooler in transaction mode, as Postgres's
//! unnamed statement.
//!
//! A named prepared statement lives in one server session. PgBouncer in
//! transaction mode (Debian's 1.18 keeps no prepared statement for its
//! clients) hands each transaction, and each statement outside one, to
//! whichever server connection is free, so a statement prepared on one is
//! executed on another: `prepared statement "s11" does not exist`. The
//! unnamed statement is parsed, bound and executed in one exchange
//! (`Parse`/`Bind`/`Describe`/`Execute`/`Sync`, one round trip, as a cached
//! statement's `Bind`/`Execute`/`Sync`), so it never outlives the exchange
//! that made it. tokio-postgres sends it with `query_typed`, which needs
//! each parameter's type up front: a [`Sql`] carries them beside its text.
//!
//! The price is that Postgres parses and plans every execution, several
//! times the Postgres time of a cached statement for a short lookup (the
//! README's "PgBouncer" has the figures). So statements are prepared and
//! cached per connection, as deadpool does, unless the deployment says
//! `DATABASE_URL` pools transactions ([`PooledClient`] carries which).
//! Either way a statement goes out when its future is first polled (a
//! cached one is found without waiting), so statements still pipeline;
//! a caller pipelining statements that may not be cached yet first
//! [`PooledClient::prepare`]s them.

use std::pin::pin;

use deadpool_postgres::ClientWrapper;
use futures_util::TryStreamExt;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Error, Row, Statement};

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
    pub async fn query(
        &self,
        client: &PooledClient<'_>,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        match client.prepared(self).await? {
            Some(statement) => client.query(&statement, params).await,
            None => client.query_typed(self.text, &self.typed(params)).await,
        }
    }

    /// The one row the statement answers, or none; more is an error.
    pub async fn query_opt(
        &self,
        client: &PooledClient<'_>,
        params: &Params<'_>,
    ) -> Result<Option<Row>, Error> {
        match client.prepared(self).await? {
            Some(statement) => client.query_opt(&statement, params).await,
            None => client.query_typed_opt(self.text, &self.typed(params)).await,
        }
    }

    /// The one row the statement answers; none or more is an error.
    pub async fn query_one(
        &self,
        client: &PooledClient<'_>,
        params: &Params<'_>,
    ) -> Result<Row, Error> {
        match client.prepared(self).await? {
            Some(statement) => client.query_one(&statement, params).await,
            None => client.query_typed_one(self.text, &self.typed(params)).await,
        }
    }

    /// How many rows the statement changed.
    pub async fn execute(
        &self,
        client: &PooledClient<'_>,
        params: &Params<'_>,
    ) -> Result<u64, Error> {
        match client.prepared(self).await? {
            Some(statement) => client.execute(&statement, params).await,
            None => execute_typed(client, self.text, &self.typed(params)).await,
        }
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

/// A pooled connection, and how statements are sent on it.
#[derive(Clone, Copy)]
pub struct PooledClient<'a> {
    client: &'a ClientWrapper,
    unnamed: bool,
}

impl<'a> PooledClient<'a> {
    /// `client`, sending statements unnamed when `unnamed` (behind a
    /// transaction pooler), else preparing and caching them.
    pub fn new(client: &'a ClientWrapper, unnamed: bool) -> Self {
        Self { client, unnamed }
    }

    /// Prepares (and caches) `statements` that are not cached yet, all in
    /// one round trip, none when they are (or when statements are sent
    /// unnamed): for a caller about to pipeline them, whose requests must
    /// leave in the order it polls them.
    pub async fn prepare(&self, statements: &[Sql]) -> Result<(), Error> {
        futures_util::future::try_join_all(
            statements.iter().map(|statement| self.prepared(statement)),
        )
        .await
        .map(drop)
    }

    /// `sql`'s cached prepared statement, or `None` to send it unnamed.
    async fn prepared(&self, sql: &Sql) -> Result<Option<Statement>, Error> {
        if self.unnamed {
            return Ok(None);
        }
        self.client
            .prepare_typed_cached(sql.text, sql.param_types)
            .await
            .map(Some)
    }
}

impl std::ops::Deref for PooledClient<'_> {
    type Target = ClientWrapper;

    fn deref(&self) -> &ClientWrapper {
        self.client
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
