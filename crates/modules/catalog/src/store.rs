//! Every SQL statement of the catalog module. Portable SQL: SQLite and PostgreSQL alike.
//!
//! Products read by id (the page of one product, the prices orders ask for) and pages of the
//! listing come from [`ProductCache`] when it holds them: the catalog's hottest reads, the
//! seed's 5,000 a second, then cost no trip to the database.

use banyan_db::{Db, now_millis, sqlx};
use banyan_kit::Page;
use banyan_kit::read_model::{Announcements, Heard, ReadModelSettings};
use banyan_message::{Currency, Money};
use sqlx::{AnyConnection, FromRow};
use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::model::{Category, Sku, ValidProduct};

/// A page of the listing: its category (all when `None`), page number and size.
pub(crate) type PageKey = (Option<String>, u32, u32);

#[derive(Debug, Clone, FromRow)]
pub(crate) struct ProductRow {
    pub(crate) id: String,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) description: String,
    pub(crate) category: String,
    pub(crate) price_minor: i64,
    pub(crate) currency: String,
    pub(crate) available: i64,
    pub(crate) created_at: i64,
    pub(crate) updated_at: i64,
}

impl ProductRow {
    pub(crate) fn id(&self) -> Uuid {
        Uuid::parse_str(&self.id).unwrap_or_default()
    }

    /// The price; the currency was checked before it was stored.
    pub(crate) fn price(&self) -> Money {
        Money::new(
            self.price_minor,
            Currency::parse(&self.currency).unwrap_or(Currency::EUR),
        )
    }
}

const COLUMNS: &str = "id, sku, name, description, category, price_minor, currency, available, \
                       created_at, updated_at";

pub(crate) async fn sku_taken(conn: &mut AnyConnection, sku: &Sku) -> Result<bool, sqlx::Error> {
    let found: Option<(String,)> = sqlx::query_as("SELECT id FROM products WHERE sku = $1")
        .bind(sku.as_str())
        .fetch_optional(conn)
        .await?;
    Ok(found.is_some())
}

pub(crate) async fn insert(
    conn: &mut AnyConnection,
    product: &ValidProduct,
) -> Result<ProductRow, sqlx::Error> {
    let now = now_millis();
    let price = product.price.money();
    let row = ProductRow {
        id: Uuid::now_v7().to_string(),
        sku: product.sku.as_str().to_owned(),
        name: product.name.as_str().to_owned(),
        description: product.description.as_str().to_owned(),
        category: product.category.as_str().to_owned(),
        price_minor: price.amount_minor,
        currency: price.currency.as_str().to_owned(),
        available: 0,
        created_at: now,
        updated_at: now,
    };
    sqlx::query(
        "INSERT INTO products (id, sku, name, description, category, price_minor, currency, \
         available, stock_version, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 0, $8, $9)",
    )
    .bind(&row.id)
    .bind(&row.sku)
    .bind(&row.name)
    .bind(&row.description)
    .bind(&row.category)
    .bind(row.price_minor)
    .bind(&row.currency)
    .bind(row.created_at)
    .bind(row.updated_at)
    .execute(conn)
    .await?;
    Ok(row)
}

/// Products by id as this process last read them, for reads that need not see the database.
///
/// What a reader may see stale, and for how long (also in ARCHITECTURE → Data): a change
/// committed by *this* process is seen at once (every write forgets its product after its
/// commit, `on_commit`). A change committed by another instance of the catalog (a split
/// running several) is seen once the entry expires, at most [`ProductCache::TTL`] later;
/// with `[modules.catalog.read_model] redis_url`, at once: every instance announces what it
/// changed and every instance forgets it when it hears it (`banyan_kit::read_model`), and
/// entries then live `ttl_secs`, except while the instance does not hear the channel. A read
/// that started before a write committed never refills the cache with what it read (the
/// epoch below), so a forgotten product cannot come back stale.
pub(crate) struct ProductCache {
    products: moka::sync::Cache<Uuid, (Arc<ProductRow>, Instant)>,
    /// Pages of the listing, encoded, by category, page and size. Every forget forgets them
    /// all: a page shows availability, so any product's change may change any page (every
    /// order empties it; reads between writes are what it serves).
    pages: moka::sync::Cache<PageKey, (Arc<[u8]>, Instant)>,
    /// Bumped by every forget; a read fills the cache only if no forget happened meanwhile.
    epoch: AtomicU64,
    /// The other instances, when the catalog announces its changes to them.
    announcements: OnceLock<Announcements>,
    /// How long an entry lives while the announcements are heard.
    heard_ttl: Duration,
}

impl std::fmt::Debug for ProductCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProductCache")
            .field("entries", &self.products.entry_count())
            .field("announcements", &self.announcements.get())
            .finish_non_exhaustive()
    }
}

impl Default for ProductCache {
    fn default() -> Self {
        Self::new(Self::TTL)
    }
}

impl ProductCache {
    /// How long an entry lives without announcements: the staleness bound across instances.
    pub(crate) const TTL: Duration = Duration::from_secs(1);
    /// Products kept at most (least recently and frequently used ones go first).
    const CAPACITY: u64 = 100_000;
    /// Listing pages kept at most.
    const PAGES: u64 = 10_000;

    fn new(heard_ttl: Duration) -> Self {
        Self {
            products: moka::sync::Cache::builder()
                .max_capacity(Self::CAPACITY)
                .time_to_live(heard_ttl.max(Self::TTL))
                .build(),
            pages: moka::sync::Cache::builder()
                .max_capacity(Self::PAGES)
                .time_to_live(heard_ttl.max(Self::TTL))
                .build(),
            epoch: AtomicU64::new(0),
            announcements: OnceLock::new(),
            heard_ttl,
        }
    }

    /// The cache of the module with `[modules.<module>.read_model]`: joined to its channel
    /// when it names a Redis.
    pub(crate) fn shared(settings: &ReadModelSettings, module: &str) -> anyhow::Result<Arc<Self>> {
        let cache = Arc::new(Self::new(Duration::from_secs(settings.ttl_secs)));
        let hearer = Arc::downgrade(&cache);
        let joined = Announcements::join(settings, module, move |heard| {
            if let Some(cache) = hearer.upgrade() {
                match heard {
                    Heard::Changed(id) => cache.forget_here(id),
                    Heard::Rejoined => cache.forget_all(),
                }
            }
        })?;
        if let Some(announcements) = joined {
            let _ = cache.announcements.set(announcements);
        }
        Ok(cache)
    }

    /// How long an entry may be served now.
    fn fresh_for(&self) -> Duration {
        match self.announcements.get() {
            Some(announcements) if announcements.hearing() => self.heard_ttl,
            _ => Self::TTL,
        }
    }

    fn cached(&self, id: &Uuid) -> Option<Arc<ProductRow>> {
        let (row, since) = self.products.get(id)?;
        (since.elapsed() < self.fresh_for()).then_some(row)
    }

    /// The product `id`, from the cache or else the database.
    pub(crate) async fn find(
        &self,
        db: &Db,
        id: Uuid,
    ) -> Result<Option<Arc<ProductRow>>, sqlx::Error> {
        if let Some(row) = self.cached(&id) {
            return Ok(Some(row));
        }
        let epoch = self.epoch.load(Ordering::Acquire);
        let row = find(db, id).await?.map(Arc::new);
        if let Some(row) = &row {
            self.fill(epoch, std::slice::from_ref(row));
        }
        Ok(row)
    }

    /// The products among `ids` that exist, in no particular order: those cached, and the
    /// others in one query.
    pub(crate) async fn find_many(
        &self,
        db: &Db,
        ids: &[Uuid],
    ) -> Result<Vec<Arc<ProductRow>>, sqlx::Error> {
        let mut found = Vec::with_capacity(ids.len());
        let mut missing = Vec::new();
        for id in ids {
            match self.cached(id) {
                Some(row) => found.push(row),
                None => missing.push(*id),
            }
        }
        if !missing.is_empty() {
            let epoch = self.epoch.load(Ordering::Acquire);
            let read: Vec<Arc<ProductRow>> = find_many(db, &missing)
                .await?
                .into_iter()
                .map(Arc::new)
                .collect();
            self.fill(epoch, &read);
            found.extend(read);
        }
        Ok(found)
    }

    /// Forgets product `id` here and announces it to the other instances: called once a
    /// change to it has committed.
    pub(crate) fn forget(&self, id: Uuid) {
        self.forget_here(id);
        if let Some(announcements) = self.announcements.get() {
            announcements.announce(id);
        }
    }

    fn forget_here(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.products.invalidate(&id);
        self.pages.invalidate_all();
    }

    /// Forgets every product: announcements may have been missed.
    fn forget_all(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.products.invalidate_all();
        self.pages.invalidate_all();
    }

    /// A page of the listing as last encoded, if still fresh.
    pub(crate) fn page(&self, key: &PageKey) -> Option<Arc<[u8]>> {
        let (page, since) = self.pages.get(key)?;
        (since.elapsed() < self.fresh_for()).then_some(page)
    }

    /// Where the forgets stand: read before reading a page from the database, and given to
    /// [`keep_page`](Self::keep_page) with it.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Keeps a page read when the epoch was `epoch`, unless something was forgotten since
    /// (the page might show a product as it was before that change).
    pub(crate) fn keep_page(&self, epoch: u64, key: PageKey, page: Arc<[u8]>) {
        self.pages.insert(key.clone(), (page, Instant::now()));
        if self.epoch.load(Ordering::Acquire) != epoch {
            self.pages.invalidate(&key);
        }
    }

    /// Caches rows read when the epoch was `epoch`, unless a product was forgotten since: the
    /// rows might be from before that change. Checked after each insert: a forget that bumped
    /// the epoch before the check is caught by it, and one that bumped it after removes the
    /// entry itself.
    fn fill(&self, epoch: u64, rows: &[Arc<ProductRow>]) {
        let now = Instant::now();
        for row in rows {
            let id = row.id();
            self.products.insert(id, (row.clone(), now));
            if self.epoch.load(Ordering::Acquire) != epoch {
                self.products.invalidate(&id);
                return;
            }
        }
    }
}

pub(crate) async fn find(db: &Db, id: Uuid) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM products WHERE id = $1"
    )))
    .bind(id.to_string())
    .fetch_optional(db.reader())
    .await
}

/// The products among `ids` that exist, in no particular order.
pub(crate) async fn find_many(db: &Db, ids: &[Uuid]) -> Result<Vec<ProductRow>, sqlx::Error> {
    let select = format!("SELECT {COLUMNS} FROM products WHERE id");
    banyan_db::fetch_by_ids(db, &select, ids).await
}

/// One page of products, oldest first, of one category or of all.
pub(crate) async fn list(
    db: &Db,
    category: Option<&Category>,
    page: Page,
) -> Result<(Vec<ProductRow>, i64), sqlx::Error> {
    let (rows, (total,)): (Vec<ProductRow>, (i64,)) = match category {
        Some(category) => (
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM products WHERE category = $1 ORDER BY id LIMIT $2 OFFSET $3"
            )))
            .bind(category.as_str())
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(db.reader())
            .await?,
            sqlx::query_as("SELECT COUNT(*) FROM products WHERE category = $1")
                .bind(category.as_str())
                .fetch_one(db.reader())
                .await?,
        ),
        None => (
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM products ORDER BY id LIMIT $1 OFFSET $2"
            )))
            .bind(page.limit())
            .bind(page.offset())
            .fetch_all(db.reader())
            .await?,
            sqlx::query_as("SELECT COUNT(*) FROM products")
                .fetch_one(db.reader())
                .await?,
        ),
    };
    Ok((rows, total))
}

/// Reads a product for a change, taking its row lock on PostgreSQL (an `UPDATE` that changes
/// nothing but `updated_at`, the portable spelling of `SELECT ... FOR UPDATE`). On SQLite the
/// unit of work already holds the write lock.
pub(crate) async fn lock(
    conn: &mut AnyConnection,
    id: Uuid,
) -> Result<Option<ProductRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET updated_at = $1 WHERE id = $2 RETURNING {COLUMNS}"
    )))
    .bind(now_millis())
    .bind(id.to_string())
    .fetch_optional(conn)
    .await
}

/// Writes a product's editable values; the row must exist (see [`lock`]).
pub(crate) async fn update(
    conn: &mut AnyConnection,
    id: Uuid,
    name: &str,
    description: &str,
    category: &str,
    price: Money,
) -> Result<ProductRow, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE products SET name = $1, description = $2, category = $3, price_minor = $4, \
         currency = $5, updated_at = $6 WHERE id = $7 RETURNING {COLUMNS}"
    )))
    .bind(name)
    .bind(description)
    .bind(category)
    .bind(price.amount_minor)
    .bind(price.currency.as_str())
    .bind(now_millis())
    .bind(id.to_string())
    .fetch_one(conn)
    .await
}

/// Records inventory's view of a product's stock if `version` is newer than the last applied.
/// `false` if the product is unknown here or the event is stale.
pub(crate) async fn apply_stock(
    conn: &mut AnyConnection,
    id: Uuid,
    available: i64,
    version: i64,
) -> Result<bool, sqlx::Error> {
    let applied = sqlx::query(
        "UPDATE products SET available = $1, stock_version = $2 \
         WHERE id = $3 AND stock_version < $2",
    )
    .bind(available)
    .bind(version)
    .bind(id.to_string())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(applied == 1)
}
