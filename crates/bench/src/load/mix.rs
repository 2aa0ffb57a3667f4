//! The seed's request mix, as requests of the public API, and the shop data they need.
//!
//! | kind | seed service (req/s) | weight | request |
//! |---|---|---|---|
//! | `users` | users (1,000) | 1,000 | `GET /api/v1/users/{id}`, the caller's own account |
//! | `product` | catalog (5,000) | 4,000 | `GET /api/v1/products/{id}` |
//! | `category` | catalog | 1,000 | `GET /api/v1/products?category=` |
//! | `cart_add` | cart (2,000) | 1,000 | `POST /api/v1/carts/{user}/items` |
//! | `cart_get` | cart | 1,000 | `GET /api/v1/carts/{user}` |
//! | `order` | orders (500) | 500 | `POST /api/v1/orders` (one line; answered once recorded, the saga runs on) |
//! | `payment` | payments (400) | 400 | `GET /api/v1/payments/{order}` of one of the caller's orders |
//! | `stock` | inventory (1,500) | 1,500 | `GET /api/v1/inventory/{product}` |
//! | `notifications` | notifications (3,000) | 3,000 | `GET /api/v1/notifications` |
//!
//! Logins are not in the mix: a login is an argon2 hash by design (milliseconds of CPU each),
//! and the customers' tokens last the run.

use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use reqwest::{Client, Method, RequestBuilder};
use serde_json::{Value, json};

/// One kind of request of the mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Users,
    Product,
    Category,
    CartAdd,
    CartGet,
    Order,
    Payment,
    Stock,
    Notifications,
}

impl Kind {
    pub(crate) const ALL: [Kind; 9] = [
        Kind::Users,
        Kind::Product,
        Kind::Category,
        Kind::CartAdd,
        Kind::CartGet,
        Kind::Order,
        Kind::Payment,
        Kind::Stock,
        Kind::Notifications,
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Users => "users",
            Kind::Product => "product",
            Kind::Category => "category",
            Kind::CartAdd => "cart_add",
            Kind::CartGet => "cart_get",
            Kind::Order => "order",
            Kind::Payment => "payment",
            Kind::Stock => "stock",
            Kind::Notifications => "notifications",
        }
    }

    /// Requests per second of this kind in the seed's estimate.
    pub(crate) fn weight(self) -> u64 {
        match self {
            Kind::Users => 1_000,
            Kind::Product => 4_000,
            Kind::Category => 1_000,
            Kind::CartAdd => 1_000,
            Kind::CartGet => 1_000,
            Kind::Order => 500,
            Kind::Payment => 400,
            Kind::Stock => 1_500,
            Kind::Notifications => 3_000,
        }
    }
}

pub(crate) fn parse_kind(text: &str) -> Result<Kind, String> {
    Kind::ALL
        .into_iter()
        .find(|kind| kind.name() == text)
        .ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown kind `{text}`: one of {}", names.join(", "))
        })
}

/// The kinds of a run, in table order: `only`, or all of them.
pub(crate) fn chosen(only: &[Kind]) -> Vec<Kind> {
    let mut kinds: Vec<Kind> = if only.is_empty() {
        Kind::ALL.to_vec()
    } else {
        only.to_vec()
    };
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Which kind each request is: the weights exactly over every `sum of weights` requests, in
/// an interleaving without runs of one kind.
#[derive(Debug, Clone)]
pub(crate) struct Mix {
    kinds: Vec<Kind>,
    total: u64,
    /// Coprime with `total`, so `n * stride % total` visits every slot once per cycle.
    stride: u64,
}

impl Mix {
    pub(crate) fn new(kinds: Vec<Kind>) -> Self {
        let total: u64 = kinds.iter().map(|k| k.weight()).sum();
        // Near the golden section of the cycle: consecutive requests land far apart.
        let mut stride = (total * 618 / 1000).max(1);
        while gcd(stride, total) != 1 {
            stride += 1;
        }
        Self {
            kinds,
            total,
            stride,
        }
    }

    /// The kind of request number `n`.
    pub(crate) fn pick(&self, n: u64) -> Kind {
        let mut slot = ((u128::from(n % self.total) * u128::from(self.stride))
            % u128::from(self.total)) as u64;
        for kind in &self.kinds {
            if slot < kind.weight() {
                return *kind;
            }
            slot -= kind.weight();
        }
        self.kinds[0]
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// A customer of the load: an account, its token, one of its orders.
#[derive(Debug, Clone)]
struct Customer {
    id: String,
    token: String,
    order: String,
}

/// The products, categories and customers the load's requests use.
#[derive(Debug)]
pub(crate) struct Shop {
    base: String,
    products: Vec<String>,
    categories: Vec<String>,
    customers: Vec<Customer>,
    /// Spreads the requests over products and customers.
    turn: AtomicU64,
}

impl Shop {
    /// Creates `products` products with ample stock in four categories and registers
    /// `customers` customers, each with one order placed (for the payment reads). Names carry
    /// a run id, so runs against one shop do not collide.
    pub(crate) async fn set_up(
        client: &Client,
        base: &str,
        (admin_user, admin_password): (&str, &str),
        products: u64,
        customers: u64,
    ) -> anyhow::Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let admin = login(client, &base, admin_user, admin_password)
            .await
            .context("the admin could not log in (see --admin-user and --admin-password)")?;
        let categories: Vec<String> = (0..4).map(|i| format!("load-{run}-{i}")).collect();
        let mut product_ids = Vec::new();
        for i in 0..products {
            let body = json!({
                "sku": format!("LOAD-{run}-{i}"),
                "name": format!("Load product {i}"),
                "category": categories[i as usize % categories.len()],
                "price": { "amount_minor": 100 + i as i64, "currency": "EUR" },
            });
            let created = call(
                client,
                Method::POST,
                &base,
                "/api/v1/products",
                Some(&admin),
                body,
                201,
            )
            .await?;
            let id = field(&created, "id")?;
            // Enough that no order of any run is refused for want of stock.
            let stock = json!({ "on_hand": 1_000_000_000_i64 });
            call(
                client,
                Method::PUT,
                &base,
                &format!("/api/v1/inventory/{id}"),
                Some(&admin),
                stock,
                200,
            )
            .await?;
            product_ids.push(id);
        }
        let mut people = Vec::new();
        for i in 0..customers {
            let username = format!("load_{run}_{i}");
            let password = format!("load-{run}-password-{i}");
            let body = json!({
                "username": username,
                "email": format!("{username}@load.example.test"),
                "password": password,
            });
            let registered = call(
                client,
                Method::POST,
                &base,
                "/api/v1/users",
                None,
                body,
                201,
            )
            .await?;
            let id = field(&registered, "id")?;
            let token = login(client, &base, &username, &password).await?;
            let product = &product_ids[i as usize % product_ids.len()];
            let order = json!({ "lines": [{ "product_id": product, "quantity": 1 }],
                                "payment_method": "tok_visa" });
            let placed = call(
                client,
                Method::POST,
                &base,
                "/api/v1/orders?wait_ms=10000",
                Some(&token),
                order,
                201,
            )
            .await?;
            people.push(Customer {
                id,
                token,
                order: field(&placed, "id")?,
            });
        }
        Ok(Self {
            base,
            products: product_ids,
            categories,
            customers: people,
            turn: AtomicU64::new(0),
        })
    }

    /// The request of `kind`, for the next customer and product in turn.
    pub(crate) fn request(&self, client: &Client, kind: Kind) -> RequestBuilder {
        let turn = self.turn.fetch_add(1, Ordering::Relaxed);
        let customer = &self.customers[(turn % self.customers.len() as u64) as usize];
        // Another stride for products, so a customer does not always see the same one.
        let product = &self.products[((turn / 7) % self.products.len() as u64) as usize];
        let url = |path: String| format!("{}{path}", self.base);
        let request = match kind {
            Kind::Users => client.get(url(format!("/api/v1/users/{}", customer.id))),
            Kind::Product => client.get(url(format!("/api/v1/products/{product}"))),
            Kind::Category => {
                let category = &self.categories[(turn % self.categories.len() as u64) as usize];
                client.get(url(format!("/api/v1/products?category={category}")))
            }
            Kind::CartAdd => client
                .post(url(format!("/api/v1/carts/{}/items", customer.id)))
                .json(&json!({ "product_id": product, "quantity": 1 })),
            Kind::CartGet => client.get(url(format!("/api/v1/carts/{}", customer.id))),
            Kind::Order => client.post(url("/api/v1/orders".to_owned())).json(
                &json!({ "lines": [{ "product_id": product, "quantity": 1 }],
                         "payment_method": "tok_visa" }),
            ),
            Kind::Payment => client.get(url(format!("/api/v1/payments/{}", customer.order))),
            Kind::Stock => client.get(url(format!("/api/v1/inventory/{product}"))),
            Kind::Notifications => client.get(url("/api/v1/notifications".to_owned())),
        };
        request.bearer_auth(&customer.token)
    }
}

async fn login(
    client: &Client,
    base: &str,
    username: &str,
    password: &str,
) -> anyhow::Result<String> {
    let body = json!({ "username": username, "password": password });
    let reply = call(
        client,
        Method::POST,
        base,
        "/api/v1/users/login",
        None,
        body,
        200,
    )
    .await?;
    field(&reply, "access_token")
}

/// A setup call that must answer `expected`; its JSON body.
async fn call(
    client: &Client,
    method: Method,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
    expected: u16,
) -> anyhow::Result<Value> {
    let mut request = client
        .request(method.clone(), format!("{base}{path}"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {base}{path}: no answer"))?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(
        status.as_u16() == expected,
        "{method} {path} answered {status}: {text}"
    );
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn field(body: &Value, key: &str) -> anyhow::Result<String> {
    body[key]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no `{key}` in {body}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_follows_the_seed_weights_exactly_over_a_cycle() {
        let mix = Mix::new(chosen(&[]));
        let mut counts = std::collections::BTreeMap::new();
        for n in 0..mix.total {
            *counts.entry(mix.pick(n)).or_insert(0_u64) += 1;
        }
        for kind in chosen(&[]) {
            assert_eq!(counts[&kind], kind.weight(), "{}", kind.name());
        }
        // No long run of one kind: the catalog's reads, a third of the mix, come spread out.
        let longest = (0..mix.total)
            .map(|n| mix.pick(n))
            .collect::<Vec<_>>()
            .chunk_by(|a, b| a == b)
            .map(<[Kind]>::len)
            .max();
        assert!(longest.is_some_and(|run| run <= 4), "a run of {longest:?}");
    }

    #[test]
    fn a_kind_is_named_as_the_table_names_it() {
        assert_eq!(parse_kind("cart_add"), Ok(Kind::CartAdd));
        assert!(
            parse_kind("carts")
                .unwrap_err()
                .contains("one of users, product")
        );
        assert_eq!(
            chosen(&[Kind::Stock, Kind::Product, Kind::Stock]),
            vec![Kind::Product, Kind::Stock]
        );
    }
}
