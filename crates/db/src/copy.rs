//! A module's data copied from where it is to another place, and checked: `banyan data move`.
//!
//! Both ends are opened as the module's own [`Db`], so the target is provisioned and migrated
//! by the same migrations as the source (on either engine). Then every table but the
//! migration histories is copied row by row in one transaction on the target, and each table is
//! counted and checksummed at both ends. The histories are not copied: they must already agree
//! (the same versions with the same checksums), which the report shows.
//!
//! Columns are `TEXT` and `BIGINT` only (ADR 0001), so a row reads and writes the same way on
//! SQLite and PostgreSQL. A checksum is the wrapping sum of each row's BLAKE2b digest: it does
//! not depend on the order rows come in, which the two engines' collations would change.

use blake2::{Blake2b512, Digest};
use futures::TryStreamExt;
use sqlx::{Row, any::AnyRow};

use crate::{Db, DbError, Engine, values_list};

/// Rows per `INSERT` while copying.
const BATCH: usize = 200;

/// One table of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Table {
    name: String,
    columns: Vec<(String, Kind)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Integer,
    Text,
}

/// One value of a row, as both engines store it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Null,
    Integer(i64),
    Text(String),
}

/// What a table holds, to compare two copies of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Contents {
    pub rows: u64,
    /// The wrapping sum of the rows' digests, in hex.
    pub checksum: u128,
}

/// One table after the copy: what the source held and what the target holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCheck {
    pub table: String,
    pub source: Contents,
    pub target: Contents,
}

impl TableCheck {
    pub fn matches(&self) -> bool {
        self.source == self.target
    }
}

/// What `copy_into` did and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub tables: Vec<TableCheck>,
    /// Each migration history, with the versions both ends have applied.
    pub histories: Vec<(String, Vec<i64>)>,
}

impl CopyReport {
    /// Whether every table holds at the target exactly what it held at the source.
    pub fn verified(&self) -> bool {
        self.tables.iter().all(TableCheck::matches)
    }
}

fn is_history(table: &str) -> bool {
    table.starts_with('_') && table.ends_with("_migrations")
}

fn failed(reason: impl Into<String>) -> DbError {
    DbError::Move(reason.into())
}

impl Db {
    /// Copies every row of this module's storage into `target` (the same module's, elsewhere,
    /// holding no rows yet), then checks every table at both ends. Nothing may write to either
    /// while it runs: the module's processes are stopped first.
    pub async fn copy_into(&self, target: &Db) -> Result<CopyReport, DbError> {
        if self.module != target.module {
            return Err(failed(format!(
                "cannot copy module {} into module {}'s storage",
                self.module, target.module
            )));
        }
        let tables = self.tables().await?;
        let at_target = target.tables().await?;
        if tables != at_target {
            return Err(failed(
                "the two ends have different tables: are both at the same migrations?",
            ));
        }
        let mut histories = Vec::new();
        for table in tables.iter().filter(|t| is_history(&t.name)) {
            let (ours, theirs) = (self.history(table).await?, target.history(table).await?);
            if ours != theirs {
                return Err(failed(format!(
                    "the migration history `{}` differs between the two ends",
                    table.name
                )));
            }
            histories.push((
                table.name.clone(),
                ours.into_iter().map(|(version, _)| version).collect(),
            ));
        }
        let data: Vec<&Table> = tables.iter().filter(|t| !is_history(&t.name)).collect();
        for table in &data {
            let held = target.contents(table).await?.rows;
            if held > 0 {
                return Err(failed(format!(
                    "the target already holds {held} row(s) in `{}`: move into empty storage",
                    table.name
                )));
            }
        }
        let mut tx = target.begin().await?;
        for table in &data {
            let columns: Vec<String> = table.columns.iter().map(|(name, _)| quote(name)).collect();
            let insert_head = format!(
                "INSERT INTO {} ({}) VALUES ",
                quote(&table.name),
                columns.join(", ")
            );
            let mut rows = sqlx::query(sqlx::AssertSqlSafe(select_all(table))).fetch(self.reader());
            let mut batch: Vec<Vec<Value>> = Vec::with_capacity(BATCH);
            loop {
                let next = rows.try_next().await?;
                if let Some(row) = &next {
                    batch.push(read_row(table, row)?);
                }
                if batch.len() == BATCH || (next.is_none() && !batch.is_empty()) {
                    let sql = format!(
                        "{insert_head}{}",
                        values_list(batch.len(), table.columns.len())
                    );
                    let mut insert = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for value in batch.drain(..).flatten() {
                        insert = match value {
                            Value::Null => insert.bind(None::<String>),
                            Value::Integer(i) => insert.bind(i),
                            Value::Text(t) => insert.bind(t),
                        };
                    }
                    insert.execute(&mut *tx).await?;
                }
                if next.is_none() {
                    break;
                }
            }
        }
        tx.commit().await?;
        let mut checks = Vec::with_capacity(data.len());
        for table in data {
            checks.push(TableCheck {
                table: table.name.clone(),
                source: self.contents(table).await?,
                target: target.contents(table).await?,
            });
        }
        Ok(CopyReport {
            tables: checks,
            histories,
        })
    }

    /// The module's tables with their columns, by name.
    async fn tables(&self) -> Result<Vec<Table>, DbError> {
        let names_sql = match self.engine {
            Engine::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite_%' ORDER BY name"
            }
            Engine::Postgres => {
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' \
                 ORDER BY table_name"
            }
        };
        let columns_sql = match self.engine {
            Engine::Sqlite => "SELECT name, type FROM pragma_table_info($1) ORDER BY cid",
            Engine::Postgres => {
                "SELECT column_name::text, data_type::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position"
            }
        };
        let names: Vec<String> = sqlx::query_scalar(names_sql)
            .fetch_all(self.reader())
            .await?;
        let mut tables = Vec::with_capacity(names.len());
        for name in names {
            let rows: Vec<(String, String)> = sqlx::query_as(columns_sql)
                .bind(&name)
                .fetch_all(self.reader())
                .await?;
            let mut columns = Vec::with_capacity(rows.len());
            for (column, declared) in rows {
                let declared = declared.to_ascii_lowercase();
                let kind = if declared.contains("int") {
                    Kind::Integer
                } else if declared.contains("text") || declared.contains("char") {
                    Kind::Text
                } else if is_history(&name) {
                    // sqlx's own history columns (a checksum blob, a timestamp) are compared
                    // through `history`, never copied.
                    continue;
                } else {
                    return Err(failed(format!(
                        "`{name}.{column}` is {declared}; only TEXT and BIGINT columns move"
                    )));
                };
                columns.push((column, kind));
            }
            tables.push(Table { name, columns });
        }
        Ok(tables)
    }

    /// A migration history: each applied version and its checksum.
    async fn history(&self, table: &Table) -> Result<Vec<(i64, Vec<u8>)>, DbError> {
        let sql = format!(
            "SELECT version, checksum FROM {} WHERE success ORDER BY version",
            quote(&table.name)
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(self.reader())
            .await?)
    }

    /// How many rows `table` holds, and their checksum.
    async fn contents(&self, table: &Table) -> Result<Contents, DbError> {
        let mut rows = sqlx::query(sqlx::AssertSqlSafe(select_all(table))).fetch(self.reader());
        let mut contents = Contents {
            rows: 0,
            checksum: 0,
        };
        while let Some(row) = rows.try_next().await? {
            contents.rows += 1;
            contents.checksum = contents
                .checksum
                .wrapping_add(digest(&read_row(table, &row)?));
        }
        Ok(contents)
    }
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

fn select_all(table: &Table) -> String {
    let columns: Vec<String> = table.columns.iter().map(|(name, _)| quote(name)).collect();
    format!("SELECT {} FROM {}", columns.join(", "), quote(&table.name))
}

fn read_row(table: &Table, row: &AnyRow) -> Result<Vec<Value>, DbError> {
    table
        .columns
        .iter()
        .enumerate()
        .map(|(i, (_, kind))| {
            Ok(match kind {
                Kind::Integer => row
                    .try_get::<Option<i64>, _>(i)?
                    .map_or(Value::Null, Value::Integer),
                Kind::Text => row
                    .try_get::<Option<String>, _>(i)?
                    .map_or(Value::Null, Value::Text),
            })
        })
        .collect()
}

/// A row's digest: each value tagged with its kind and, for text, its length, so that no two
/// different rows write the same bytes.
fn digest(row: &[Value]) -> u128 {
    let mut hasher = Blake2b512::new();
    for value in row {
        match value {
            Value::Null => hasher.update(b"n"),
            Value::Integer(i) => {
                hasher.update(b"i");
                hasher.update(i.to_le_bytes());
            }
            Value::Text(text) => {
                hasher.update(b"t");
                hasher.update((text.len() as u64).to_le_bytes());
                hasher.update(text.as_bytes());
            }
        }
    }
    let out = hasher.finalize();
    let mut first = [0_u8; 16];
    first.copy_from_slice(&out[..16]);
    u128::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checksum_tells_rows_apart_but_not_their_order() {
        let a = [Value::Text("ab".into()), Value::Integer(1)];
        let b = [Value::Text("a".into()), Value::Text("b".into())];
        let c = [Value::Null, Value::Integer(1)];
        assert_ne!(digest(&a), digest(&b));
        assert_ne!(digest(&a), digest(&c));
        let sum = |rows: &[&[Value]]| {
            rows.iter()
                .fold(0_u128, |sum, row| sum.wrapping_add(digest(row)))
        };
        assert_eq!(sum(&[&a, &b, &c]), sum(&[&c, &a, &b]));
        assert_ne!(sum(&[&a, &b]), sum(&[&a, &c]));
    }

    #[test]
    fn migration_histories_are_told_from_data() {
        assert!(is_history("_sqlx_migrations"));
        assert!(is_history("_messaging_migrations"));
        assert!(!is_history("outbox"));
        assert!(!is_history("payment_migrations"));
    }
}
