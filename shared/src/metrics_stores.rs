//! Store operation latency, from the spans the store code already makes.
//!
//! Every function that talks to a store is instrumented with a span named
//! `postgres.<operation>` or `redis.<operation>` (target
//! [`crate::telemetry::SPAN_TARGET`]). This layer times those spans and
//! records [`STORE_OPERATION_DURATION`] by store and operation, so the store
//! code needs no metric call of its own, and the label values are the span
//! names written in the code: a fixed set. It only enables the store spans:
//! the per-call `grpc` span and everything else stay as cheap as before.
//!
//! The time is the span's whole life: waiting for a pooled connection, the
//! round trips, and the time the caller spent polling between them.

use std::time::Instant;

use tracing::span::{Attributes, Id};
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterFn, Filtered};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::metrics_catalog::{STORE_OPERATION_DURATION, store};

/// Times store spans; see the module documentation.
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreTimingLayer;

/// When a store span started, kept in its extensions.
struct Started(Instant);

/// The store and operation a span's name stands for, when it is a store
/// span (`postgres.redeem` is `("postgres", "redeem")`).
fn store_operation(metadata: &Metadata<'_>) -> Option<(&'static str, &'static str)> {
    if !metadata.is_span() || metadata.target() != crate::telemetry::SPAN_TARGET {
        return None;
    }
    let name: &'static str = metadata.name();
    if let Some(operation) = name.strip_prefix("postgres.") {
        return Some((store::POSTGRES, operation));
    }
    name.strip_prefix("redis.")
        .map(|operation| (store::REDIS, operation))
}

fn is_store_span(metadata: &Metadata<'_>) -> bool {
    store_operation(metadata).is_some()
}

impl StoreTimingLayer {
    /// The layer, enabled for store spans alone.
    pub fn filtered<S>() -> Filtered<Self, FilterFn, S>
    where
        S: Subscriber + for<'lookup> LookupSpan<'lookup>,
    {
        let only_store_spans: FilterFn = FilterFn::new(is_store_span as fn(&Metadata<'_>) -> bool)
            .with_max_level_hint(tracing::Level::DEBUG);
        Self.with_filter(only_store_spans)
    }
}

impl<S> Layer<S> for StoreTimingLayer
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn on_new_span(&self, _attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(Started(Instant::now()));
        }
    }

    fn on_close(&self, id: Id, context: Context<'_, S>) {
        let Some(span) = context.span(&id) else {
            return;
        };
        let Some((store, operation)) = store_operation(span.metadata()) else {
            return;
        };
        if let Some(Started(started)) = span.extensions().get::<Started>() {
            metrics::histogram!(
                STORE_OPERATION_DURATION,
                "store" => store,
                "operation" => operation,
            )
            .record(started.elapsed().as_secs_f64());
        }
    }
}
