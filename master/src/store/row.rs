//! [`sqlite_row!`](crate::sqlite_row): a struct read from SQLite and PostgreSQL rows by column
//! name.

/// Declares a struct and implements `sqlx::FromRow` for SQLite rows and for PostgreSQL rows on
/// it, each field read from the column of the same name. It does what
/// `#[derive(sqlx::FromRow)]` does for these plain rows without sqlx's proc-macro crate, whose
/// build compiles a second copy of the SQLite driver (and SQLite itself) for the compiler host
/// in every fresh build. The calling crate needs `sqlx` as a dependency, with its `sqlite` and
/// `postgres` features.
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
                use ::sqlx::Row as _;
                ::std::result::Result::Ok($name {
                    $( $field: row.try_get(::std::stringify!($field))? ),*
                })
            }
        }

        impl<'r> ::sqlx::FromRow<'r, ::sqlx::postgres::PgRow> for $name {
            fn from_row(
                row: &'r ::sqlx::postgres::PgRow,
            ) -> ::std::result::Result<Self, ::sqlx::Error> {
                use ::sqlx::Row as _;
                ::std::result::Result::Ok($name {
                    $( $field: row.try_get(::std::stringify!($field))? ),*
                })
            }
        }
    };
}

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
}
