//! Table `account_quotas`: the account's quotas for a model as Service Quotas last gave them, with their time.

use sqlx::FromRow;

use super::store::{CheckpointError, Store, failed_to, now};

/// One quota, cached.
#[derive(Debug, Clone, PartialEq, FromRow)]
pub struct CachedQuota {
    /// `rpm`, `tpm` or `tpd`.
    pub measure: String,
    /// `L-…`.
    pub code: String,
    /// The quota's name.
    pub name: String,
    /// The applied value.
    pub value: f64,
    /// When it was read, Unix seconds.
    pub read_at: i64,
}

impl Store {
    /// Replaces the cached quotas of `model_id` in `region` with `quotas`, read now.
    pub async fn cache_quotas(
        &self,
        region: &str,
        model_id: &str,
        quotas: &[CachedQuota],
    ) -> Result<(), CheckpointError> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM account_quotas WHERE region = ? AND model_id = ?")
            .bind(region)
            .bind(model_id)
            .execute(&mut *tx)
            .await
            .map_err(failed_to("cache quotas"))?;
        for q in quotas {
            sqlx::query(
                "INSERT OR REPLACE INTO account_quotas (region, model_id, measure, code, name, value, read_at) \
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(region)
            .bind(model_id)
            .bind(&q.measure)
            .bind(&q.code)
            .bind(&q.name)
            .bind(q.value)
            .bind(now())
            .execute(&mut *tx)
            .await
            .map_err(failed_to("cache quotas"))?;
        }
        tx.commit().await.map_err(failed_to("commit"))
    }

    /// The cached quotas of `model_id` in `region`.
    pub async fn cached_quotas(
        &self,
        region: &str,
        model_id: &str,
    ) -> Result<Vec<CachedQuota>, CheckpointError> {
        sqlx::query_as(
            "SELECT measure, code, name, value, read_at FROM account_quotas WHERE region = ? AND model_id = ? \
             ORDER BY measure",
        )
        .bind(region)
        .bind(model_id)
        .fetch_all(&self.pool)
        .await
        .map_err(failed_to("read cached quotas"))
    }
}

#[cfg(test)]
mod tests {
    use super::super::store::scratch;
    use super::*;

    #[tokio::test]
    async fn quotas_are_cached_per_region_and_model_and_replaced() {
        let (_dir, store) = scratch().await;
        let q = |measure: &str, value: f64| CachedQuota {
            measure: measure.into(),
            code: format!("L-{measure}"),
            name: format!("{measure} for M"),
            value,
            read_at: 0,
        };
        store
            .cache_quotas("us-east-1", "m", &[q("tpm", 1000.0), q("rpm", 50.0)])
            .await
            .unwrap();
        store
            .cache_quotas("us-east-1", "m", &[q("tpm", 2000.0)])
            .await
            .unwrap();
        let cached = store.cached_quotas("us-east-1", "m").await.unwrap();
        assert_eq!(cached.len(), 1);
        assert_eq!(
            (cached[0].measure.as_str(), cached[0].value),
            ("tpm", 2000.0)
        );
        assert!(cached[0].read_at > 1_700_000_000);
        assert!(
            store
                .cached_quotas("eu-west-1", "m")
                .await
                .unwrap()
                .is_empty()
        );
    }
}
