use chrono::{TimeZone, Utc};
use proptest::prelude::*;

use crate::money::NanoUsd;
use crate::spend::{
    LimitSettingError, MonthSpend, SpendLimits, SpendScope, check_spend, month_key, month_start,
    next_month_start, validate_organization_limit, validate_user_limit, validate_workspace_limit,
};

fn usd(value: i64) -> NanoUsd {
    NanoUsd::from_usd(value)
}

#[test]
fn months_are_calendar_months_in_utc() {
    let now = Utc
        .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
        .single()
        .expect("instant");
    assert_eq!(
        month_start(now),
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("instant")
    );
    assert_eq!(
        next_month_start(now),
        Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
            .single()
            .expect("instant")
    );
    assert_eq!(month_key(now), 202_612);
}

#[test]
fn the_most_specific_reached_limit_is_named() {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .expect("instant");
    let limits = SpendLimits {
        tier: Some(usd(100)),
        organization: Some(usd(50)),
        workspace: Some(usd(20)),
        user: None,
    };
    let spent = MonthSpend {
        organization: usd(45),
        workspace: usd(19),
        user: usd(0),
    };
    assert_eq!(check_spend(&limits, &spent, usd(1), now), Ok(()));
    let reached = check_spend(&limits, &spent, usd(2), now).expect_err("over the workspace limit");
    assert_eq!(reached.scope, SpendScope::Workspace);
    assert_eq!(
        reached.resets_at,
        Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0)
            .single()
            .expect("instant")
    );
    let other_workspace = MonthSpend {
        organization: usd(45),
        workspace: usd(0),
        user: usd(0),
    };
    assert_eq!(
        check_spend(&limits, &other_workspace, usd(6), now).map_err(|reached| reached.scope),
        Err(SpendScope::Organization)
    );
    let tier_only = SpendLimits {
        tier: Some(usd(100)),
        ..SpendLimits::default()
    };
    assert_eq!(
        check_spend(
            &tier_only,
            &MonthSpend {
                organization: usd(100),
                workspace: usd(0),
                user: usd(0),
            },
            NanoUsd::from_nanos(1),
            now
        )
        .map_err(|reached| reached.scope),
        Err(SpendScope::Tier)
    );
    assert_eq!(
        check_spend(&SpendLimits::default(), &spent, usd(1_000_000), now),
        Ok(())
    );
}

#[test]
fn a_users_limit_is_named_before_every_other_scope() {
    let now = Utc
        .with_ymd_and_hms(2026, 11, 25, 12, 0, 0)
        .single()
        .expect("instant");
    let limits = SpendLimits {
        tier: Some(usd(100)),
        organization: Some(usd(50)),
        workspace: Some(usd(20)),
        user: Some(usd(5)),
    };
    let spent = MonthSpend {
        organization: usd(49),
        workspace: usd(19),
        user: usd(4),
    };
    assert_eq!(check_spend(&limits, &spent, usd(1), now), Ok(()));
    let reached = check_spend(&limits, &spent, usd(2), now).expect_err("over every limit");
    assert_eq!((reached.scope, reached.limit), (SpendScope::User, usd(5)));
    // Another user of the same workspace has spent nothing: the workspace binds them.
    let other_user = MonthSpend {
        user: usd(0),
        ..spent
    };
    assert_eq!(
        check_spend(&limits, &other_user, usd(2), now).map_err(|reached| reached.scope),
        Err(SpendScope::Workspace)
    );
    // A request made by no user carries no per-user limit.
    let no_user = SpendLimits { user: None, ..limits };
    assert_eq!(
        check_spend(
            &no_user,
            &MonthSpend {
                user: usd(0),
                ..spent
            },
            usd(1),
            now
        ),
        Ok(())
    );
}

#[test]
fn limits_can_only_be_lowered() {
    assert_eq!(
        validate_organization_limit(usd(101), Some(usd(100))),
        Err(LimitSettingError::AboveTierCap(usd(100)))
    );
    assert_eq!(validate_organization_limit(usd(100), Some(usd(100))), Ok(()));
    assert_eq!(
        validate_organization_limit(usd(0), None),
        Err(LimitSettingError::NotPositive)
    );
    assert_eq!(
        validate_workspace_limit(usd(60), Some(usd(50)), Some(usd(100))),
        Err(LimitSettingError::AboveOrganization(usd(50)))
    );
    assert_eq!(
        validate_workspace_limit(usd(101), None, Some(usd(100))),
        Err(LimitSettingError::AboveOrganization(usd(100)))
    );
    assert_eq!(validate_workspace_limit(usd(5), None, None), Ok(()));
    assert_eq!(
        validate_user_limit(usd(21), Some(usd(20)), Some(usd(50)), Some(usd(100))),
        Err(LimitSettingError::AboveWorkspace(usd(20)))
    );
    assert_eq!(
        validate_user_limit(usd(51), None, Some(usd(50)), Some(usd(100))),
        Err(LimitSettingError::AboveWorkspace(usd(50)))
    );
    assert_eq!(
        validate_user_limit(usd(101), None, None, Some(usd(100))),
        Err(LimitSettingError::AboveWorkspace(usd(100)))
    );
    assert_eq!(validate_user_limit(usd(20), Some(usd(20)), None, None), Ok(()));
    assert_eq!(
        validate_user_limit(usd(0), None, None, None),
        Err(LimitSettingError::NotPositive)
    );
}

proptest! {
    /// Whatever the sequence of admitted amounts, spend never exceeds the limit.
    #[test]
    fn admitted_spend_stays_within_every_limit(amounts in prop::collection::vec(1..50_i64, 1..60)) {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().expect("instant");
        let limits = SpendLimits { tier: Some(usd(500)), organization: Some(usd(300)), workspace: Some(usd(200)), user: None };
        let mut spent = MonthSpend::default();
        for amount in amounts {
            if check_spend(&limits, &spent, usd(amount), now).is_ok() {
                spent.organization = spent.organization.saturating_add(usd(amount));
                spent.workspace = spent.workspace.saturating_add(usd(amount));
            }
            prop_assert!(spent.workspace <= usd(200));
        }
    }

    /// Two users of one workspace admitted in any interleaving: each stays within the
    /// per-user limit, and together within the workspace's.
    #[test]
    fn each_users_spend_stays_within_the_per_user_limit(
        requests in prop::collection::vec((any::<bool>(), 1..30_i64), 1..80),
    ) {
        let now = Utc.with_ymd_and_hms(2026, 11, 25, 12, 0, 0).single().expect("instant");
        let limits = SpendLimits { tier: None, organization: None, workspace: Some(usd(150)), user: Some(usd(100)) };
        let mut organization = usd(0);
        let mut users = [usd(0), usd(0)];
        for (second, amount) in requests {
            let user = usize::from(second);
            let spent = MonthSpend { organization, workspace: organization, user: users[user] };
            if check_spend(&limits, &spent, usd(amount), now).is_ok() {
                organization = organization.saturating_add(usd(amount));
                users[user] = users[user].saturating_add(usd(amount));
            }
            prop_assert!(users[user] <= usd(100));
            prop_assert!(organization <= usd(150));
        }
    }
}
