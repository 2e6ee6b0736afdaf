//! The cost of one authorization: the bucket's policy of 20 statements
//! (the worst case issue 19 names) against a request none of them denies,
//! next to no policy. BENCHMARKS.md ("Authorization") sets it against a
//! 4 KiB GET.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use shardgate_authz::{
    Acl, Context, Policy, PublicAccessBlock, Requester, Subject, action, authorize,
};

fn twenty_statements() -> String {
    let mut statements = Vec::new();
    for i in 0..20 {
        statements.push(format!(
            r#"{{"Sid":"s{i}","Effect":"{}","Principal":{{"AWS":"arn:aws:iam::123456789012:user/user{i}"}},
               "Action":["s3:GetObject","s3:PutObject","s3:List*"],
               "Resource":["arn:aws:s3:::photos","arn:aws:s3:::photos/team{i}/*"],
               "Condition":{{"IpAddress":{{"aws:SourceIp":"10.{i}.0.0/16"}},"StringNotEquals":{{"s3:x-amz-acl":"public-read-write"}}}}}}"#,
            if i % 4 == 0 { "Deny" } else { "Allow" }
        ));
    }
    format!(
        r#"{{"Version":"2012-10-17","Statement":[{}]}}"#,
        statements.join(",")
    )
}

fn bench(c: &mut Criterion) {
    let owner = "1".repeat(64);
    let policy = Policy::parse(&twenty_statements(), "photos").expect("the policy parses");
    let acl = Acl::canned("public-read", &owner, &owner).expect("canned");
    let requester = Requester::User {
        name: "user7".into(),
        canonical_id: "7".repeat(64),
    };
    let get = action::lookup("s3:GetObject").expect("known");
    let mut context = Context::default();
    context
        .insert("aws:SourceIp", "10.7.1.2")
        .insert("aws:username", "user7");
    let with = Subject {
        bucket_owner: &owner,
        object_owner: Some(&owner),
        bucket_acl: None,
        object_acl: Some(&acl),
        policy: Some(&policy),
        block: PublicAccessBlock::default(),
        acls_enabled: true,
    };
    let without = Subject {
        policy: None,
        ..with
    };
    let arn = "arn:aws:s3:::photos/team7/cat.jpg";
    let mut group = c.benchmark_group("authorize");
    group.bench_function("policy_of_20", |b| {
        b.iter(|| authorize(&requester, get, arn, &context, &with).is_ok())
    });
    group.bench_function("acl_only", |b| {
        b.iter(|| authorize(&requester, get, arn, &context, &without).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
