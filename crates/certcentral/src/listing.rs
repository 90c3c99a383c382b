//! List orders and List domains: one page per call, and walkers that fetch every page.
//!
//! Each page is one HTTP call through the same path as every other call: the shared rate
//! limiter (in the token lane, so DCV checks go first) and the retry policy. A walk of `n`
//! entries therefore costs `ceil(n / 1000)` calls (at least 1) and never more than the limiter
//! allows.
//!
//! Paging is by `offset`/`limit`. Entries that change state while a walk is under way can shift
//! between pages (an order issued between page 1 and page 2 moves every later order one place
//! up, so one is skipped); a walker does not try to repair that, the next scan sees it. It drops
//! duplicates by id and stops when a page brings nothing new, so a server that ignores `offset`
//! cannot make it loop.

use std::collections::HashSet;

use reqwest::{Method, Url};

use crate::Error;
use crate::client::{Client, Endpoint};
use crate::types::{DomainInfo, DomainList, OrderList, OrderSummary};

/// The largest page DigiCert serves (List domains documents 1000 as maximum and default; for
/// List orders the number was not found, 1000 is what other clients send: an inference).
pub const MAX_PAGE_SIZE: u32 = 1000;

/// Filters of List orders (`filters[...]` query parameters). `Default` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrderFilter {
    /// `filters[status]`: `pending`, `issued`, `rejected`, `revoked`, `waiting_pickup`,
    /// `reissue_pending`, `canceled`.
    pub status: Option<String>,
    /// `filters[product_name_id]`, e.g. `ssl_dv_geotrust`.
    pub product_name_id: Option<String>,
    /// `filters[container_id]`.
    pub container_id: Option<u64>,
}

impl OrderFilter {
    /// Pending orders only (`filters[status]=pending`), what discovery scans.
    pub fn pending() -> Self {
        Self { status: Some("pending".to_string()), ..Self::default() }
    }

    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        if let Some(status) = &self.status {
            pairs.push(("filters[status]", status.clone()));
        }
        if let Some(product) = &self.product_name_id {
            pairs.push(("filters[product_name_id]", product.clone()));
        }
        if let Some(container) = self.container_id {
            pairs.push(("filters[container_id]", container.to_string()));
        }
        pairs
    }
}

/// Filters of List domains. `Default` filters nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DomainFilter {
    /// `filters[status]`: `active` or `inactive`.
    pub status: Option<String>,
}

impl DomainFilter {
    /// Active domains only (`filters[status]=active`).
    pub fn active() -> Self {
        Self { status: Some("active".to_string()) }
    }
}

/// Every entry of a walk over all pages, and what the walk cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing<T> {
    /// The entries, in the server's order, duplicates (by id) dropped.
    pub items: Vec<T>,
    /// List calls made (pages fetched; retries of one page count once).
    pub calls: u32,
    /// The server's `page.total` on the last page.
    pub total: u64,
}

/// Builds `path?query` with the pairs percent-encoded (`filters[status]` ->
/// `filters%5Bstatus%5D`).
fn with_query(path: &str, pairs: &[(&str, String)]) -> String {
    // only the query encoding is used; the host is a placeholder
    let mut url = Url::parse("http://placeholder.invalid").expect("static URL parses");
    url.set_path(path);
    url.query_pairs_mut().extend_pairs(pairs.iter().map(|(k, v)| (*k, v.as_str())));
    match url.query() {
        Some(q) if !q.is_empty() => format!("{path}?{q}"),
        _ => path.to_string(),
    }
}

fn clamp_limit(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE_SIZE)
}

/// Walks pages with `fetch(offset)` until the total is reached or a page brings nothing new.
async fn walk<T, F, Fut>(mut fetch: F, id_of: fn(&T) -> u64) -> Result<Listing<T>, Error>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<T>, u64), Error>>,
{
    let mut seen = HashSet::new();
    let mut items = Vec::new();
    let (mut offset, mut calls) = (0u64, 0u32);
    loop {
        let (page, total) = fetch(offset).await?;
        calls += 1;
        let received = page.len() as u64;
        let before = items.len();
        items.extend(page.into_iter().filter(|item| seen.insert(id_of(item))));
        offset += received;
        let brought_new = items.len() > before;
        let more = if total > 0 { offset < total } else { received == u64::from(MAX_PAGE_SIZE) };
        if received == 0 || !brought_new || !more {
            return Ok(Listing { items, calls, total });
        }
    }
}

impl Client {
    /// `GET /order/certificate`: one page of List orders (`limit` is clamped to 1..=1000).
    ///
    /// The answer has no `dcv_method`; an empty result (no `orders` key) gives an empty list.
    /// One call through the shared rate limiter.
    pub async fn list_orders(&self, filter: &OrderFilter, offset: u64, limit: u32) -> Result<OrderList, Error> {
        let mut pairs = filter.pairs();
        pairs.push(("offset", offset.to_string()));
        pairs.push(("limit", clamp_limit(limit).to_string()));
        let path = with_query("/order/certificate", &pairs);
        self.json(Endpoint::ListOrders, Method::GET, 0, &path, None).await
    }

    /// Every order matching `filter`, 1000 per page: `ceil(total / 1000)` calls (at least one),
    /// each through the shared rate limiter like any other call.
    pub async fn list_all_orders(&self, filter: &OrderFilter) -> Result<Listing<OrderSummary>, Error> {
        walk(
            |offset| async move {
                let page = self.list_orders(filter, offset, MAX_PAGE_SIZE).await?;
                Ok((page.orders, page.page.total))
            },
            |o: &OrderSummary| o.id,
        )
        .await
    }

    /// `GET /domain?include_dcv_expiration_time=true`: one page of List domains (`limit`
    /// clamped to 1..=1000), `dcv_expiration` as UTC timestamps. Listed validations are the
    /// active ones only, and a domain without any has no `validations` key (an empty list
    /// here). One call through the shared rate limiter.
    pub async fn list_domains(&self, filter: &DomainFilter, offset: u64, limit: u32) -> Result<DomainList, Error> {
        let mut pairs = vec![("include_dcv_expiration_time", "true".to_string())];
        if let Some(status) = &filter.status {
            pairs.push(("filters[status]", status.clone()));
        }
        pairs.push(("offset", offset.to_string()));
        pairs.push(("limit", clamp_limit(limit).to_string()));
        let path = with_query("/domain", &pairs);
        self.json(Endpoint::ListDomains, Method::GET, 0, &path, None).await
    }

    /// Every domain matching `filter`, 1000 per page: `ceil(total / 1000)` calls (at least
    /// one), each through the shared rate limiter like any other call.
    pub async fn list_all_domains(&self, filter: &DomainFilter) -> Result<Listing<DomainInfo>, Error> {
        walk(
            |offset| async move {
                let page = self.list_domains(filter, offset, MAX_PAGE_SIZE).await?;
                Ok((page.domains, page.page.total))
            },
            |d: &DomainInfo| d.id,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_encoded() {
        let pairs = OrderFilter {
            status: Some("pending".into()),
            product_name_id: Some("ssl dv&x".into()),
            container_id: Some(14),
        }
        .pairs();
        assert_eq!(
            with_query("/order/certificate", &pairs),
            "/order/certificate?filters%5Bstatus%5D=pending&filters%5Bproduct_name_id%5D=ssl+dv%26x&\
             filters%5Bcontainer_id%5D=14"
        );
        assert_eq!(with_query("/domain", &[]), "/domain");
        assert_eq!(clamp_limit(5000), 1000);
        assert_eq!(clamp_limit(0), 1);
    }
}
