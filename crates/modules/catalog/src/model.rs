//! The values of `catalog` and the rules on them, and the module's error.

use banyan_db::sqlx;
use banyan_kit::Invalid;
use banyan_message::Money;
use serde::Deserialize;
use uuid::Uuid;

/// What can go wrong in `catalog`. It reads as an `ApiError` at the HTTP edge and as a
/// `Rejection` on the bus.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("that sku is already taken")]
    SkuTaken,
    #[error("product {0} does not exist")]
    NotFound(Uuid),
    #[error(transparent)]
    Storage(#[from] sqlx::Error),
}

impl Error {
    /// Two requests racing for one SKU both pass the check on PostgreSQL; the unique index
    /// stops the second, and that is still a conflict.
    pub(crate) fn taken_or_storage(error: sqlx::Error) -> Self {
        match error.as_database_error() {
            Some(db) if db.is_unique_violation() => Self::SkuTaken,
            _ => Self::Storage(error),
        }
    }
}

/// A stock-keeping unit: 1 to 64 characters of `A-Z a-z 0-9 - _ .`, unique, kept as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sku(String);

impl Sku {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        if !(1..=64).contains(&raw.chars().count()) {
            return Err(Invalid::new("sku", "must be 1 to 64 characters"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(Invalid::new(
                "sku",
                "may hold only letters, digits, '-', '_' and '.'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's name: 1 to 200 characters once trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProductName(String);

impl ProductName {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let name = raw.trim();
        // Counted as given (at most 200) and as kept (at least 1), as the document says.
        if raw.chars().count() > 200 || name.is_empty() {
            return Err(Invalid::new("name", "must be 1 to 200 characters"));
        }
        if name.chars().any(char::is_control) {
            return Err(Invalid::new("name", "must not hold control characters"));
        }
        Ok(Self(name.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A product's description: up to 2000 characters once trimmed; line breaks and tabs are the
/// only control characters allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Description(String);

impl Description {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        let description = raw.trim();
        if raw.chars().count() > 2000 {
            return Err(Invalid::new(
                "description",
                "must be at most 2000 characters",
            ));
        }
        if description
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(Invalid::new(
                "description",
                "must not hold control characters other than line breaks and tabs",
            ));
        }
        Ok(Self(description.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A category: a slug of 1 to 64 characters of `a-z 0-9 -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Category(String);

impl Category {
    pub(crate) fn parse(raw: &str) -> Result<Self, Invalid> {
        if !(1..=64).contains(&raw.chars().count()) {
            return Err(Invalid::new("category", "must be 1 to 64 characters"));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(Invalid::new(
                "category",
                "may hold only lower-case letters, digits and '-'",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// A price: 0 to 10^10 minor units (a hundred million euros) in a valid currency (the
/// currency is checked when the JSON is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Price(Money);

impl Price {
    pub(crate) const MAX_MINOR: i64 = 10_000_000_000;

    pub(crate) fn parse(raw: Money) -> Result<Self, Invalid> {
        if !(0..=Self::MAX_MINOR).contains(&raw.amount_minor) {
            return Err(Invalid::new(
                "price.amount_minor",
                "must be 0 to 10000000000 minor units",
            ));
        }
        Ok(Self(raw))
    }

    pub(crate) fn money(self) -> Money {
        self.0
    }
}

/// A new product as an admin gives it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewProduct {
    /// The product's name outside Banyan; unique. 1 to 64 letters, digits, `-`, `_`, `.`.
    #[schema(min_length = 1, max_length = 64, pattern = r"^[A-Za-z0-9._-]{1,64}$")]
    pub(crate) sku: String,
    /// 1 to 200 characters, not all spaces, no control characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub(crate) name: String,
    /// Empty if not given. At most 2000 characters; line breaks and tabs are the only control
    /// characters allowed.
    #[serde(default)]
    #[schema(
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub(crate) description: Option<String>,
    /// A slug of 1 to 64 characters of `a-z 0-9 -`, such as `kitchen`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[a-z0-9-]{1,64}$")]
    pub(crate) category: String,
    /// 0 to 10^10 minor units.
    #[schema(value_type = PriceInput)]
    pub(crate) price: Money,
}

/// A price as the document states it: money of 0 to 10^10 minor units. Only its schema is
/// used; the price is read as [`Money`] and checked by [`Price::parse`].
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
// As `Money` reads it: no field beyond the two (`additionalProperties: false`).
#[serde(deny_unknown_fields)]
pub(crate) struct PriceInput {
    #[schema(minimum = 0, maximum = 10_000_000_000_i64)]
    amount_minor: i64,
    currency: banyan_message::Currency,
}

/// A product once every value of it is valid.
#[derive(Debug, Clone)]
pub(crate) struct ValidProduct {
    pub(crate) sku: Sku,
    pub(crate) name: ProductName,
    pub(crate) description: Description,
    pub(crate) category: Category,
    pub(crate) price: Price,
}

impl NewProduct {
    pub(crate) fn validate(self) -> Result<ValidProduct, Invalid> {
        Ok(ValidProduct {
            sku: Sku::parse(&self.sku)?,
            name: ProductName::parse(&self.name)?,
            description: Description::parse(self.description.as_deref().unwrap_or_default())?,
            category: Category::parse(&self.category)?,
            price: Price::parse(self.price)?,
        })
    }
}

/// Changes to a product as an admin gives them: any of the fields, at least one. The SKU is
/// not among them: it names the product outside Banyan.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(min_properties = 1)]
pub(crate) struct ProductChanges {
    /// As for a new product.
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) name: Option<String>,
    #[schema(
        nullable = false,
        max_length = 2000,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) description: Option<String>,
    #[schema(
        nullable = false,
        min_length = 1,
        max_length = 64,
        pattern = "^[a-z0-9-]{1,64}$"
    )]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) category: Option<String>,
    #[schema(value_type = Option<PriceInput>, nullable = false)]
    #[serde(default, deserialize_with = "banyan_kit::extract::present")]
    pub(crate) price: Option<Money>,
}

/// The changes once every value given is valid.
#[derive(Debug, Clone)]
pub(crate) struct ValidChanges {
    pub(crate) name: Option<ProductName>,
    pub(crate) description: Option<Description>,
    pub(crate) category: Option<Category>,
    pub(crate) price: Option<Price>,
}

impl ProductChanges {
    pub(crate) fn validate(self) -> Result<ValidChanges, Invalid> {
        if self.name.is_none()
            && self.description.is_none()
            && self.category.is_none()
            && self.price.is_none()
        {
            return Err(Invalid::new(
                "body",
                "give at least one of name, description, category and price",
            ));
        }
        Ok(ValidChanges {
            name: self.name.as_deref().map(ProductName::parse).transpose()?,
            description: self
                .description
                .as_deref()
                .map(Description::parse)
                .transpose()?,
            category: self.category.as_deref().map(Category::parse).transpose()?,
            price: self.price.map(Price::parse).transpose()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use banyan_message::Currency;

    use super::*;

    fn eur(amount_minor: i64) -> Money {
        Money::new(amount_minor, Currency::EUR)
    }

    #[test]
    fn skus_are_short_codes_of_letters_digits_dashes_underscores_and_dots() {
        assert_eq!(Sku::parse("AB-12_x.3").unwrap().as_str(), "AB-12_x.3");
        assert!(Sku::parse(&"A".repeat(64)).is_ok());
        for bad in ["", " AB", "A B", "AB/1", "ÄB", "AB\n"] {
            assert!(Sku::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Sku::parse(&"A".repeat(65)).is_err());
    }

    #[test]
    fn names_are_trimmed_and_hold_one_to_two_hundred_printable_characters() {
        assert_eq!(ProductName::parse("  Teapot ").unwrap().as_str(), "Teapot");
        assert!(ProductName::parse(&"é".repeat(200)).is_ok());
        assert!(ProductName::parse(&"é".repeat(201)).is_err());
        for bad in ["", "   ", "Tea\u{0}pot", "Tea\npot", "Tea\u{7f}pot"] {
            assert!(ProductName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn descriptions_may_be_empty_or_span_lines_but_not_exceed_two_thousand_characters() {
        assert_eq!(Description::parse("").unwrap().as_str(), "");
        assert!(Description::parse("Line one.\nLine\ttwo.").is_ok());
        assert!(Description::parse(&"x".repeat(2000)).is_ok());
        assert!(Description::parse(&"x".repeat(2001)).is_err());
        assert!(Description::parse("bell\u{7}").is_err());
    }

    #[test]
    fn categories_are_lower_case_slugs() {
        assert_eq!(Category::parse("kitchen-2").unwrap().as_str(), "kitchen-2");
        for bad in [
            "",
            "Kitchen",
            "kit chen",
            "kitchen_ware",
            "küche",
            " kitchen",
        ] {
            assert!(Category::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Category::parse(&"a".repeat(64)).is_ok());
        assert!(Category::parse(&"a".repeat(65)).is_err());
    }

    #[test]
    fn prices_are_between_zero_and_ten_billion_minor_units() {
        assert!(Price::parse(eur(0)).is_ok());
        assert!(Price::parse(eur(Price::MAX_MINOR)).is_ok());
        assert!(Price::parse(eur(Price::MAX_MINOR + 1)).is_err());
        assert!(Price::parse(eur(-1)).is_err());
        assert!(Price::parse(eur(i64::MIN)).is_err());
    }

    #[test]
    fn a_new_product_rejects_unknown_fields_and_bad_currencies() {
        let ok = r#"{"sku":"T-1","name":"Teapot","category":"kitchen","price":{"amount_minor":1999,"currency":"EUR"}}"#;
        let product: NewProduct = serde_json::from_str(ok).unwrap();
        let valid = product.validate().unwrap();
        assert_eq!(valid.description.as_str(), "");
        assert_eq!(valid.price.money(), eur(1999));
        let extra = r#"{"sku":"T-1","name":"Teapot","category":"kitchen","price":{"amount_minor":1,"currency":"EUR"},"stock":3}"#;
        assert!(serde_json::from_str::<NewProduct>(extra).is_err());
        let lower = r#"{"sku":"T-1","name":"Teapot","category":"kitchen","price":{"amount_minor":1,"currency":"eur"}}"#;
        assert!(serde_json::from_str::<NewProduct>(lower).is_err());
    }

    #[test]
    fn changes_must_name_at_least_one_field_and_never_the_sku() {
        let none: ProductChanges = serde_json::from_str("{}").unwrap();
        assert!(none.validate().is_err());
        // A field may be left out, not sent as null (the document says it is not nullable).
        assert!(serde_json::from_str::<ProductChanges>(r#"{"name":null}"#).is_err());
        assert!(serde_json::from_str::<ProductChanges>(r#"{"sku":"X"}"#).is_err());
        let price: ProductChanges =
            serde_json::from_str(r#"{"price":{"amount_minor":5,"currency":"USD"}}"#).unwrap();
        assert!(price.validate().unwrap().price.is_some());
        let bad: ProductChanges = serde_json::from_str(r#"{"category":"Bad Slug"}"#).unwrap();
        assert!(bad.validate().is_err());
    }
}
