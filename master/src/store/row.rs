//! [`sqlite_row!`](crate::sqlite_row): a struct read from SQLite and PostgreSQL rows by column
//! name.

/// Declares a struct and implements `sqlx::FromRow` for SQLite rows and for PostgreSQL rows on
/// it, each field read from the column of the same name. It does what
/// `#[derive(sqlx::FromRow)]` does for these plain rows without sqlx's proc-macro crate, whose
/// build compiles a second copy of the SQLite driver (and SQLite itself) for the compiler host
/// in every fresh build. The calling crate needs `sqlx` as a dependency, with its `sqlite` and
/// `postgres` features.
///
/// Each field is read through [`Column`](crate::store::Column): plain SQL values as sqlx
/// decodes them, and the domain types stored as text (ids, trial statuses) parsed once here, so
/// a malformed value in the database is a decode error naming the column and the value.
///
/// PostgreSQL checks types strictly where SQLite converts: an `i64` field needs a `BIGINT`
/// column (`COUNT(*)` is one; `SUM` of a `BIGINT` is a `NUMERIC`, to be cast with `::BIGINT`),
/// an `f64` one a `DOUBLE PRECISION`, a `bool` one a `BOOLEAN`.
///
/// ```
/// explore_master::sqlite_row! {
///     /// One counted status.
///     #[derive(Debug)]
///     pub struct StatusCount {
///         pub status: String,
///         pub n: i64,
///     }
/// }
/// ```
#[macro_export]
macro_rules! sqlite_row {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $( $(#[$field_meta:meta])* $field_vis:vis $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        $vis struct $name {
            $( $(#[$field_meta])* $field_vis $field : $ty ),*
        }

        impl<'r> ::sqlx::FromRow<'r, ::sqlx::sqlite::SqliteRow> for $name {
            fn from_row(
                row: &'r ::sqlx::sqlite::SqliteRow,
            ) -> ::std::result::Result<Self, ::sqlx::Error> {
                ::std::result::Result::Ok($name {
                    $( $field: <$ty as $crate::store::Column>::from_sqlite(
                        row,
                        ::std::stringify!($field),
                    )? ),*
                })
            }
        }

        impl<'r> ::sqlx::FromRow<'r, ::sqlx::postgres::PgRow> for $name {
            fn from_row(
                row: &'r ::sqlx::postgres::PgRow,
            ) -> ::std::result::Result<Self, ::sqlx::Error> {
                ::std::result::Result::Ok($name {
                    $( $field: <$ty as $crate::store::Column>::from_pg(
                        row,
                        ::std::stringify!($field),
                    )? ),*
                })
            }
        }
    };
}

use std::str::FromStr;

use explore_common::ids::{ExperimentId, TrialId, WorkerId};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::Row as _;

use super::{ExperimentStatus, TrialStatus};

/// A value [`sqlite_row!`](crate::sqlite_row) reads from a column of a SQLite or PostgreSQL
/// row: the plain SQL types as sqlx decodes them, and the domain types stored as text (ids,
/// statuses) parsed from it, so that a row carries typed values from the start.
pub trait Column: Sized {
    /// The value of column `name` of a SQLite row.
    fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, sqlx::Error>;
    /// The value of column `name` of a PostgreSQL row.
    fn from_pg(row: &PgRow, name: &str) -> Result<Self, sqlx::Error>;
}

macro_rules! plain_columns {
    ($($ty:ty),*) => {$(
        impl Column for $ty {
            fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get(name)
            }
            fn from_pg(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get(name)
            }
        }
        impl Column for Option<$ty> {
            fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get(name)
            }
            fn from_pg(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get(name)
            }
        }
    )*};
}

plain_columns!(String, i64, i32, f64, bool);

/// Parses the text of column `name` into a domain type: a value that does not parse is a
/// decode error naming the column and the value (never a panic).
pub fn parse_column<T>(name: &str, text: &str) -> Result<T, sqlx::Error>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    text.parse().map_err(|e: T::Err| sqlx::Error::ColumnDecode {
        index: name.to_string(),
        source: format!("malformed value {text:?}: {e}").into(),
    })
}

/// [`parse_column`] for a value a backend read as plain text (a tuple row), as the store error
/// a row that does not decode is.
pub(crate) fn parse_text<T>(name: &str, text: &str) -> Result<T, crate::error::MasterError>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    parse_column(name, text)
        .map_err(|e| crate::error::MasterError::Store(super::StoreError::other(e.to_string())))
}

macro_rules! text_columns {
    ($($ty:ty),*) => {$(
        impl Column for $ty {
            fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, sqlx::Error> {
                parse_column(name, &row.try_get::<String, _>(name)?)
            }
            fn from_pg(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                parse_column(name, &row.try_get::<String, _>(name)?)
            }
        }
        impl Column for Option<$ty> {
            fn from_sqlite(row: &SqliteRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get::<Option<String>, _>(name)?
                    .map(|text| parse_column(name, &text))
                    .transpose()
            }
            fn from_pg(row: &PgRow, name: &str) -> Result<Self, sqlx::Error> {
                row.try_get::<Option<String>, _>(name)?
                    .map(|text| parse_column(name, &text))
                    .transpose()
            }
        }
    )*};
}

text_columns!(
    ExperimentId,
    TrialId,
    WorkerId,
    TrialStatus,
    ExperimentStatus
);

#[cfg(test)]
mod tests {
    crate::sqlite_row! {
        /// A test row.
        #[derive(Debug, PartialEq)]
        struct Pair {
            /// Documented field.
            name: String,
            value: Option<f64>,
        }
    }

    #[tokio::test]
    async fn fields_are_read_by_column_name_whatever_the_column_order() {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect("sqlite::memory:")
            .await
            .unwrap();
        let row: Pair = sqlx::query_as("SELECT NULL AS value, 'a' AS name")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            row,
            Pair {
                name: "a".into(),
                value: None
            }
        );
        let missing = sqlx::query_as::<_, Pair>("SELECT 'a' AS name")
            .fetch_one(&mut conn)
            .await;
        assert!(
            matches!(missing, Err(sqlx::Error::ColumnNotFound(ref c)) if c == "value"),
            "{missing:?}"
        );
    }

    crate::sqlite_row! {
        /// A row of typed columns.
        #[derive(Debug, PartialEq)]
        struct Typed {
            id: explore_common::TrialId,
            parent: Option<explore_common::TrialId>,
            status: crate::store::TrialStatus,
        }
    }

    #[tokio::test]
    async fn ids_and_statuses_are_parsed_once_and_a_malformed_one_is_an_error_naming_it() {
        let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect("sqlite::memory:")
            .await
            .unwrap();
        let row: Typed =
            sqlx::query_as("SELECT 'trial-1' AS id, NULL AS parent, 'leased' AS status")
                .fetch_one(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            row,
            Typed {
                id: "trial-1".parse().unwrap(),
                parent: None,
                status: crate::store::TrialStatus::Leased,
            }
        );
        for (sql, column, value) in [
            (
                "SELECT 'exp-1' AS id, NULL AS parent, 'queued' AS status",
                "id",
                "exp-1",
            ),
            (
                "SELECT 'trial-1' AS id, 'trial-a b' AS parent, 'queued' AS status",
                "parent",
                "trial-a b",
            ),
            (
                "SELECT 'trial-1' AS id, NULL AS parent, 'lost' AS status",
                "status",
                "lost",
            ),
        ] {
            let err = sqlx::query_as::<_, Typed>(sql)
                .fetch_one(&mut conn)
                .await
                .unwrap_err();
            assert!(
                matches!(err, sqlx::Error::ColumnDecode { ref index, .. } if index == column),
                "{err:?}"
            );
            let text = err.to_string();
            assert!(text.contains(column) && text.contains(value), "{text}");
            // As the store reports it: an error, never a panic.
            let err = crate::store::sqlite::convert_sqlx_err(err);
            assert!(
                matches!(err, crate::error::MasterError::Store(_)),
                "{err:?}"
            );
            assert!(err.to_string().contains(value), "{err}");
        }
    }
}
