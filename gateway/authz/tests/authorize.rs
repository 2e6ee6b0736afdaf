//! Policies, ACLs and Public Access Block decided together, case by case,
//! with S3's answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use shardgate_authz::acl::{ALL_USERS, AUTHENTICATED_USERS};
use shardgate_authz::{
    Acl, AclError, Context, Grantee, Permission, Policy, PublicAccessBlock, Requester, Subject,
    action, authorize,
};

const OWNER: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const OTHER: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn alice() -> Requester {
    Requester::User {
        name: "alice".into(),
        canonical_id: OWNER.into(),
    }
}

fn bob() -> Requester {
    Requester::User {
        name: "bob".into(),
        canonical_id: OTHER.into(),
    }
}

fn admin() -> Requester {
    Requester::Admin {
        canonical_id: "0".repeat(64),
    }
}

fn subject<'a>(policy: Option<&'a Policy>, object_acl: Option<&'a Acl>) -> Subject<'a> {
    Subject {
        bucket_owner: OWNER,
        object_owner: Some(OWNER),
        bucket_acl: None,
        object_acl,
        policy,
        block: PublicAccessBlock::default(),
        acls_enabled: true,
    }
}

fn get(who: &Requester, key: &str, s: &Subject<'_>) -> bool {
    let ctx = Context::default();
    let get = action::lookup("s3:GetObject").unwrap();
    authorize(who, get, &format!("arn:aws:s3:::photos/{key}"), &ctx, s).is_ok()
}

#[test]
fn a_private_object_is_its_owners_alone() {
    let acl = Acl::private(OWNER);
    let s = subject(None, Some(&acl));
    assert!(get(&alice(), "a", &s));
    assert!(get(&admin(), "a", &s));
    assert!(!get(&bob(), "a", &s));
    assert!(!get(&Requester::Anonymous, "a", &s));
}

#[test]
fn public_read_lets_anyone_read_and_nobody_else_write() {
    let acl = Acl::canned("public-read", OWNER, OWNER).unwrap();
    assert!(acl.is_public());
    let s = subject(None, Some(&acl));
    assert!(get(&Requester::Anonymous, "a", &s));
    assert!(get(&bob(), "a", &s));
    let put = action::lookup("s3:PutObject").unwrap();
    let ctx = Context::default();
    assert!(
        authorize(
            &Requester::Anonymous,
            put,
            "arn:aws:s3:::photos/a",
            &ctx,
            &s
        )
        .is_err()
    );
    let acp = action::lookup("s3:GetObjectAcl").unwrap();
    assert!(
        authorize(
            &Requester::Anonymous,
            acp,
            "arn:aws:s3:::photos/a",
            &ctx,
            &s
        )
        .is_err()
    );
}

#[test]
fn authenticated_read_needs_a_signature() {
    let acl = Acl::canned("authenticated-read", OWNER, OWNER).unwrap();
    let s = subject(None, Some(&acl));
    assert!(get(&bob(), "a", &s));
    assert!(!get(&Requester::Anonymous, "a", &s));
}

#[test]
fn a_deny_on_a_prefix_wins_over_a_public_acl() {
    let policy = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*",
            "Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/private/*"}]}"#,
        "photos",
    )
    .unwrap();
    let acl = Acl::canned("public-read", OWNER, OWNER).unwrap();
    let s = subject(Some(&policy), Some(&acl));
    assert!(get(&Requester::Anonymous, "public/cat.jpg", &s));
    assert!(!get(&Requester::Anonymous, "private/cat.jpg", &s));
    // The Deny names everyone: the owner and the root too.
    assert!(!get(&alice(), "private/cat.jpg", &s));
    assert!(!get(&admin(), "private/cat.jpg", &s));
}

#[test]
fn the_root_can_always_remove_a_policy_that_denies_everything() {
    let policy = Policy::parse(
        r#"{"Statement":[{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::photos","arn:aws:s3:::photos/*"]}]}"#,
        "photos",
    )
    .unwrap();
    let s = subject(Some(&policy), None);
    let ctx = Context::default();
    let delete = action::lookup("s3:DeleteBucketPolicy").unwrap();
    assert!(authorize(&admin(), delete, "arn:aws:s3:::photos", &ctx, &s).is_ok());
    assert!(authorize(&alice(), delete, "arn:aws:s3:::photos", &ctx, &s).is_err());
}

#[test]
fn a_policy_grants_another_user_by_name_and_a_condition_narrows_it() {
    let policy = Policy::parse(
        r#"{"Statement":[{"Sid":"bob-reads","Effect":"Allow",
            "Principal":{"AWS":"arn:aws:iam::123456789012:user/bob"},
            "Action":["s3:GetObject","s3:ListBucket"],
            "Resource":["arn:aws:s3:::photos","arn:aws:s3:::photos/*"],
            "Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}]}"#,
        "photos",
    )
    .unwrap();
    assert!(!policy.is_public());
    let s = subject(Some(&policy), None);
    let get = action::lookup("s3:GetObject").unwrap();
    let mut inside = Context::default();
    inside.insert("aws:SourceIp", "10.1.2.3");
    let mut outside = Context::default();
    outside.insert("aws:SourceIp", "192.0.2.1");
    let arn = "arn:aws:s3:::photos/a";
    assert!(authorize(&bob(), get, arn, &inside, &s).is_ok());
    assert!(authorize(&bob(), get, arn, &outside, &s).is_err());
    assert!(authorize(&Requester::Anonymous, get, arn, &inside, &s).is_err());
}

#[test]
fn public_access_block_ignores_public_acls_and_restricts_public_policies() {
    let acl = Acl::canned("public-read", OWNER, OWNER).unwrap();
    let mut s = subject(None, Some(&acl));
    s.block.ignore_public_acls = true;
    assert!(!get(&Requester::Anonymous, "a", &s));
    assert!(get(&alice(), "a", &s));

    let policy = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}]}"#,
        "photos",
    )
    .unwrap();
    assert!(policy.is_public());
    let mut s = subject(Some(&policy), None);
    assert!(get(&Requester::Anonymous, "a", &s));
    s.block.restrict_public_buckets = true;
    assert!(!get(&Requester::Anonymous, "a", &s));
}

#[test]
fn acls_count_for_nothing_when_the_bucket_owner_enforces_ownership() {
    let acl = Acl::canned("public-read", OWNER, OWNER).unwrap();
    let mut s = subject(None, Some(&acl));
    s.acls_enabled = false;
    assert!(!get(&Requester::Anonymous, "a", &s));
}

#[test]
fn a_bucket_acl_grants_listing_and_writing() {
    let acl = Acl::canned("public-read-write", OWNER, OWNER).unwrap();
    let mut s = subject(None, None);
    s.bucket_acl = Some(&acl);
    let ctx = Context::default();
    let list = action::lookup("s3:ListBucket").unwrap();
    let put = action::lookup("s3:PutObject").unwrap();
    assert!(authorize(&Requester::Anonymous, list, "arn:aws:s3:::photos", &ctx, &s).is_ok());
    assert!(
        authorize(
            &Requester::Anonymous,
            put,
            "arn:aws:s3:::photos/n",
            &ctx,
            &s
        )
        .is_ok()
    );
    let acl_write = action::lookup("s3:PutBucketAcl").unwrap();
    assert!(
        authorize(
            &Requester::Anonymous,
            acl_write,
            "arn:aws:s3:::photos",
            &ctx,
            &s
        )
        .is_err()
    );
}

#[test]
fn the_object_owner_may_act_on_its_object_in_another_users_bucket() {
    let acl = Acl::canned("bucket-owner-read", OTHER, OWNER).unwrap();
    let mut s = subject(None, Some(&acl));
    s.object_owner = Some(OTHER);
    assert!(get(&bob(), "a", &s));
    assert!(get(&alice(), "a", &s));
    assert!(
        acl.grants
            .iter()
            .any(|g| g.grantee == Grantee::User(OWNER.into()) && g.permission == Permission::Read)
    );
    // Its owner reads it and its ACL, but deleting or tagging it is the
    // bucket's to allow; with ACLs disabled it owns nothing.
    let resource = "arn:aws:s3:::photos/a";
    let ctx = Context::default();
    for (name, allowed) in [
        ("s3:GetObjectAcl", true),
        ("s3:PutObjectAcl", true),
        ("s3:DeleteObject", false),
        ("s3:DeleteObjectVersion", false),
        ("s3:PutObjectTagging", false),
        ("s3:PutObjectRetention", false),
    ] {
        let action = action::lookup(name).unwrap();
        assert_eq!(
            authorize(&bob(), action, resource, &ctx, &s).is_ok(),
            allowed,
            "{name}"
        );
    }
    s.acls_enabled = false;
    assert!(!get(&bob(), "a", &s));
}

#[test]
fn a_bucket_write_grant_writes_and_deletes_objects_but_not_versions() {
    let acl = Acl {
        owner: OWNER.into(),
        grants: vec![shardgate_authz::Grant {
            grantee: Grantee::User(OTHER.into()),
            permission: Permission::Write,
        }],
    };
    let s = Subject {
        bucket_acl: Some(&acl),
        ..subject(None, None)
    };
    let ctx = Context::default();
    for (name, allowed) in [
        ("s3:PutObject", true),
        ("s3:DeleteObject", true),
        ("s3:DeleteObjectVersion", false),
        ("s3:GetObject", false),
    ] {
        let action = action::lookup(name).unwrap();
        assert_eq!(
            authorize(&bob(), action, "arn:aws:s3:::photos/a", &ctx, &s).is_ok(),
            allowed,
            "{name}"
        );
    }
}

#[test]
fn policy_variables_give_each_user_a_home() {
    let policy = Policy::parse(
        r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:root"},
            "Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/home/${aws:username}/*"}]}"#,
        "photos",
    )
    .unwrap();
    let s = Subject {
        bucket_owner: &"9".repeat(64),
        ..subject(Some(&policy), None)
    };
    let get = action::lookup("s3:GetObject").unwrap();
    let mut ctx = Context::default();
    ctx.insert("aws:username", "bob");
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/home/bob/x", &ctx, &s).is_ok());
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/home/alice/x", &ctx, &s).is_err());
    // A variable's value and `${*}` are literal, never wildcards.
    let literal = Policy::parse(
        r#"{"Statement":[{"Effect":"Allow","Principal":"*","Action":"s3:GetObject",
            "Resource":"arn:aws:s3:::photos/${aws:username}/star${*}"}]}"#,
        "photos",
    )
    .unwrap();
    let s2 = Subject {
        policy: Some(&literal),
        ..s
    };
    let mut wild = Context::default();
    wild.insert("aws:username", "b*");
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/b*/star*", &wild, &s2).is_ok());
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/bob/star*", &wild, &s2).is_err());
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/b*/starry", &wild, &s2).is_err());
    // No username in the context: the resource matches nothing.
    let empty = Context::default();
    assert!(authorize(&bob(), get, "arn:aws:s3:::photos/home/bob/x", &empty, &s).is_err());
}

#[test]
fn conditions_follow_iams_rules_on_absent_keys() {
    let parse = |cond: &str| {
        Policy::parse(
            &format!(
                r#"{{"Statement":[{{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::b","Condition":{cond}}}]}}"#
            ),
            "b",
        )
        .unwrap()
    };
    let allows = |policy: &Policy, ctx: &Context| {
        policy.evaluate(&shardgate_authz::Request {
            requester: &Requester::Anonymous,
            action: "s3:ListBucket",
            resource: "arn:aws:s3:::b",
            context: ctx,
        }) == shardgate_authz::Verdict::Allow
    };
    let none = Context::default();
    let mut docs = Context::default();
    docs.insert("s3:prefix", "docs/");
    let equals = parse(r#"{"StringEquals":{"s3:prefix":"docs/"}}"#);
    assert!(allows(&equals, &docs) && !allows(&equals, &none));
    let not_equals = parse(r#"{"StringNotEquals":{"s3:prefix":"docs/"}}"#);
    assert!(!allows(&not_equals, &docs) && allows(&not_equals, &none));
    let if_exists = parse(r#"{"StringEqualsIfExists":{"s3:prefix":"docs/"}}"#);
    assert!(allows(&if_exists, &docs) && allows(&if_exists, &none));
    let null = parse(r#"{"Null":{"s3:prefix":"true"}}"#);
    assert!(!allows(&null, &docs) && allows(&null, &none));
    let all = parse(r#"{"ForAllValues:StringLike":{"s3:prefix":"d*"}}"#);
    assert!(allows(&all, &docs) && allows(&all, &none));
    let any = parse(r#"{"ForAnyValue:StringLike":{"s3:prefix":"d*"}}"#);
    assert!(allows(&any, &docs) && !allows(&any, &none));
    let mut tag = Context::default();
    tag.insert("s3:ExistingObjectTag/Class", "public");
    let tagged = parse(r#"{"StringEquals":{"s3:existingobjecttag/Class":"public"}}"#);
    assert!(allows(&tagged, &tag));
    let wrong_case = parse(r#"{"StringEquals":{"s3:ExistingObjectTag/class":"public"}}"#);
    assert!(!allows(&wrong_case, &tag));
    let secure = parse(r#"{"Bool":{"aws:SecureTransport":"true"}}"#);
    let mut tls = Context::default();
    tls.insert("aws:SecureTransport", "true");
    assert!(allows(&secure, &tls) && !allows(&secure, &none));
    let small = parse(r#"{"NumericLessThanEquals":{"s3:max-keys":"10"}}"#);
    let mut keys = Context::default();
    keys.insert("s3:max-keys", "10");
    assert!(allows(&small, &keys));
    let before = parse(r#"{"DateLessThan":{"aws:CurrentTime":"2030-01-01T00:00:00Z"}}"#);
    let mut now = Context::default();
    now.insert("aws:CurrentTime", "2026-12-06T12:00:00Z");
    assert!(allows(&before, &now));
}

#[test]
fn malformed_policies_are_refused_with_the_reason() {
    let refuse = |text: &str, why: &str| {
        let e = Policy::parse(text, "photos").expect_err(text);
        assert!(e.0.contains(why), "{text}: {e} does not say {why:?}");
    };
    let stmt = |s: &str| format!(r#"{{"Version":"2012-10-17","Statement":[{s}]}}"#);
    refuse("{", "invalid Json");
    refuse(
        r#"{"Version":"2012-10-17"}"#,
        "Missing required field Statement",
    );
    refuse(r#"{"Version":"2020-01-01","Statement":[]}"#, "Version");
    refuse(
        &stmt(
            r#"{"Effect":"Maybe","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#,
        ),
        "Invalid effect",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:Fly","Resource":"arn:aws:s3:::photos/*"}"#,
        ),
        "invalid action",
    );
    // A multi-byte character where "s3:" would end is refused, not a panic.
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3éGetObject","Resource":"arn:aws:s3:::photos/*"}"#,
        ),
        "invalid action",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}"#,
        ),
        "invalid resource",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos"}"#,
        ),
        "Action does not apply",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","NotPrincipal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#,
        ),
        "both Principal and NotPrincipal",
    );
    refuse(
        &stmt(r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#),
        "Missing required field Principal",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::123456789012:user/*"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#,
        ),
        "Invalid principal",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*","Condition":{"StringSortOf":{"s3:prefix":"a"}}}"#,
        ),
        "Invalid Condition type",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*","Condition":{"IpAddress":{"aws:SourceIp":"not-an-ip"}}}"#,
        ),
        "Invalid value",
    );
    refuse(
        &stmt(
            r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*","Condition":{"StringEquals":{"color":"a"}}}"#,
        ),
        "invalid condition key",
    );
    let two = r#"{"Sid":"x","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::photos/*"}"#;
    refuse(&stmt(&format!("{two},{two}")), "unique");
    refuse(&" ".repeat(21 * 1024), "at most");
}

#[test]
fn canned_acls_and_grant_headers_build_the_lists_s3_does() {
    let full = Acl::canned("bucket-owner-full-control", OTHER, OWNER).unwrap();
    assert_eq!(full.grants.len(), 2);
    assert_eq!(
        Acl::canned("bucket-owner-full-control", OWNER, OWNER).unwrap(),
        Acl::private(OWNER)
    );
    assert_eq!(
        Acl::canned("public-write", OWNER, OWNER),
        Err(AclError::UnknownCanned("public-write".into()))
    );
    let known = |id: &str| id == OTHER;
    let acl = Acl::from_grant_headers(
        OWNER,
        &[
            (
                Permission::Read,
                &format!(r#"uri="{ALL_USERS}", id="{OTHER}""#),
            ),
            (Permission::FullControl, &format!(r#"id="{OWNER}""#)),
            (
                Permission::WriteAcp,
                &format!("uri=\"{AUTHENTICATED_USERS}\""),
            ),
        ],
        known,
    )
    .unwrap();
    assert_eq!(acl.grants.len(), 4);
    assert!(acl.is_public());
    assert!(acl.allows(&bob(), Permission::Read, false));
    assert!(!acl.allows(&Requester::Anonymous, Permission::WriteAcp, false));
    assert!(acl.allows(&bob(), Permission::WriteAcp, false));
    assert!(!acl.allows(&bob(), Permission::WriteAcp, true));
    assert!(matches!(
        Acl::from_grant_headers(
            OWNER,
            &[(Permission::Read, "emailAddress=\"a@b.c\"")],
            known
        ),
        Err(AclError::Email(_))
    ));
    assert!(matches!(
        Acl::from_grant_headers(OWNER, &[(Permission::Read, "id=\"nobody\"")], known),
        Err(AclError::Invalid(_))
    ));
    assert!(matches!(
        Acl::from_grant_headers(
            OWNER,
            &[(Permission::Read, "uri=\"http://example.com/g\"")],
            known
        ),
        Err(AclError::Invalid(_))
    ));
}
