//! [`DashboardStore`]'s contract: a link is used once, only before it expires; sessions are
//! read while live, ended on sign-out, and purged once ended.

use crate::storage::sql::dashboard::{DashboardStore, LinkUse, SessionRole};

const T0: u64 = 1_800_000_000;

pub(crate) async fn links_are_single_use_and_sessions_end(db: &impl DashboardStore) {
    db.insert_link("l1", "acme", T0, T0 + 900).await.unwrap();
    db.insert_link("l2", "acme", T0, T0 + 900).await.unwrap();
    assert_eq!(db.use_link("nope", T0).await.unwrap(), LinkUse::Unknown);
    assert_eq!(
        db.use_link("l1", T0 + 10).await.unwrap(),
        LinkUse::Signed("acme".into())
    );
    assert_eq!(
        db.use_link("l1", T0 + 11).await.unwrap(),
        LinkUse::AlreadyUsed
    );
    // Expiry is exclusive: at expires_at the link is dead.
    assert_eq!(db.use_link("l2", T0 + 900).await.unwrap(), LinkUse::Expired);
    assert_eq!(db.use_link("l2", T0 + 901).await.unwrap(), LinkUse::Expired);

    let a = "a".repeat(64);
    let o = "b".repeat(64);
    db.insert_session(&a, &SessionRole::Tenant("acme".into()), T0, T0 + 100)
        .await
        .unwrap();
    db.insert_session(&o, &SessionRole::Operator, T0, T0 + 200)
        .await
        .unwrap();
    let session = db.session(&a, T0 + 99).await.unwrap().unwrap();
    assert_eq!(session.role, SessionRole::Tenant("acme".into()));
    assert_eq!((session.created_at, session.expires_at), (T0, T0 + 100));
    assert_eq!(db.session(&a, T0 + 100).await.unwrap(), None);
    assert_eq!(
        db.session(&o, T0 + 100).await.unwrap().unwrap().role,
        SessionRole::Operator
    );
    assert_eq!(db.session(&"c".repeat(64), T0).await.unwrap(), None);
    assert!(db.delete_session(&o).await.unwrap());
    assert!(!db.delete_session(&o).await.unwrap());
    assert_eq!(db.session(&o, T0 + 1).await.unwrap(), None);

    // The ended session goes; the links stay a day past their expiry, then go.
    assert_eq!(db.purge(T0 + 100).await.unwrap(), 1);
    assert_eq!(db.purge(T0 + 900 + 86_400).await.unwrap(), 2);
    assert_eq!(
        db.use_link("l1", T0 + 900 + 86_401).await.unwrap(),
        LinkUse::Unknown
    );
}
