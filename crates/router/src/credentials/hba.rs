//! Which authentication method a client gets, by pg_hba.conf-style rules (`auth.hba`, or
//! `auth.auth_hba_file` as PgBouncer's `auth_hba_file`): the first line whose connection
//! type, database, user and address match decides. Supported: `host`, `hostssl`,
//! `hostnossl` (`local` lines are accepted and never match: the router has no Unix socket),
//! databases and users as `all`, `sameuser`, `samerole`-free name lists, addresses as `all`,
//! CIDR or address + mask, methods `trust`, `reject`, `md5`, `password`, `scram-sha-256`
//! and `cert` (with `tls: terminate` and `tls_cafile`: a client certificate signed by that CA
//! whose common name is the user name), and the option `clientcert=verify-ca|verify-full` on
//! `hostssl` lines (a client certificate required besides the password; with `verify-full`
//! its common name must be the user name), as PostgreSQL 15 has them.

use std::net::IpAddr;

/// How the router checks a client's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Trust,
    Reject,
    /// md5 challenge; a SCRAM secret makes it SCRAM, as in PostgreSQL.
    Md5,
    /// Cleartext password.
    Password,
    ScramSha256,
    /// A client certificate whose common name is the user name.
    Cert,
}

impl Method {
    pub fn parse(text: &str) -> Option<Method> {
        match text {
            "trust" => Some(Method::Trust),
            "reject" => Some(Method::Reject),
            "md5" => Some(Method::Md5),
            "password" | "plain" => Some(Method::Password),
            "scram-sha-256" => Some(Method::ScramSha256),
            "cert" => Some(Method::Cert),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Method::Trust => "trust",
            Method::Reject => "reject",
            Method::Md5 => "md5",
            Method::Password => "password",
            Method::ScramSha256 => "scram-sha-256",
            Method::Cert => "cert",
        }
    }
}

/// What a line's `clientcert` option (or the `cert` method) asks of the client's certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientCert {
    /// Nothing (no option).
    #[default]
    None,
    /// A certificate signed by `tls_cafile`.
    VerifyCa,
    /// That, and its common name is the user name.
    VerifyFull,
}

/// The decision of the first matching line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub method: Method,
    pub clientcert: ClientCert,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    All,
    /// The database named like the user (`sameuser`), or one of the listed names.
    List {
        same_user: bool,
        names: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Address {
    All,
    Net { network: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    conn: ConnType,
    databases: Names,
    users: Names,
    address: Address,
    pub method: Method,
    pub clientcert: ClientCert,
}

fn names(field: &str, what: &str) -> Result<Names, String> {
    if field == "all" {
        return Ok(Names::All);
    }
    let mut same_user = false;
    let mut names = Vec::new();
    for name in field.split(',') {
        let name = name.trim_matches('"');
        if name.starts_with('+') || name.starts_with('@') {
            return Err(format!(
                "{what} `{name}`: group (+role) and file (@file) entries are not supported by the router"
            ));
        }
        match name {
            "sameuser" => same_user = true,
            "samerole" | "samegroup" | "replication" => {
                return Err(format!("{what} `{name}` is not supported by the router"))
            }
            "" => return Err(format!("empty {what} name")),
            _ => names.push(name.to_string()),
        }
    }
    Ok(Names::List { same_user, names })
}

fn mask_prefix(mask: IpAddr) -> Option<u8> {
    let bits: u128 = match mask {
        IpAddr::V4(m) => (u32::from(m) as u128) << 96,
        IpAddr::V6(m) => u128::from(m),
    };
    let ones = bits.leading_ones();
    (bits.checked_shl(ones).unwrap_or(0) == 0).then_some(ones as u8)
}

fn address(field: &str, mask: Option<&str>) -> Result<(Address, bool), String> {
    if field == "all" {
        return Ok((Address::All, false));
    }
    if let Some((ip, prefix)) = field.split_once('/') {
        let network: IpAddr = ip.parse().map_err(|_| format!("bad address `{field}`"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("bad prefix length in `{field}`"))?;
        return Ok((Address::Net { network, prefix }, false));
    }
    let network: IpAddr = field.parse().map_err(|_| {
        format!("address `{field}`: host names, samehost and samenet are not supported by the router; use CIDR")
    })?;
    let mask = mask.ok_or_else(|| format!("address `{field}` needs a /prefix or a mask"))?;
    let mask: IpAddr = mask.parse().map_err(|_| format!("bad mask `{mask}`"))?;
    let prefix = mask_prefix(mask).ok_or_else(|| format!("bad mask `{mask}`"))?;
    Ok((Address::Net { network, prefix }, true))
}

/// One line (comments and blank lines give None).
pub fn parse_line(line: &str) -> Result<Option<HbaRule>, String> {
    let line = line.split('#').next().unwrap_or_default().trim();
    if line.is_empty() {
        return Ok(None);
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    let conn = match fields[0] {
        "local" => ConnType::Local,
        "host" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        other => {
            return Err(format!(
                "connection type `{other}` (use host, hostssl, hostnossl or local)"
            ))
        }
    };
    let need = if conn == ConnType::Local { 4 } else { 5 };
    if fields.len() < need {
        return Err("too few fields: TYPE DATABASE USER ADDRESS METHOD".into());
    }
    let databases = names(fields[1], "database")?;
    let users = names(fields[2], "user")?;
    let (address, method_at) = if conn == ConnType::Local {
        (Address::All, 3)
    } else {
        let (address, used_mask) = address(fields[3], fields.get(4).copied())?;
        (address, if used_mask { 5 } else { 4 })
    };
    let method_text = fields
        .get(method_at)
        .ok_or("missing the authentication method")?;
    let method = Method::parse(method_text).ok_or_else(|| {
        format!("method `{method_text}` is not supported by the router (trust, reject, md5, password, scram-sha-256, cert)")
    })?;
    let mut clientcert = if method == Method::Cert {
        ClientCert::VerifyFull
    } else {
        ClientCert::None
    };
    for option in &fields[method_at + 1..] {
        match option.split_once('=') {
            Some(("clientcert", value)) => {
                clientcert = match value {
                    "verify-full" => ClientCert::VerifyFull,
                    "verify-ca" if method == Method::Cert => {
                        return Err(
                            "clientcert=verify-ca: the cert method always checks the common name; use verify-full or leave the option out".into(),
                        )
                    }
                    "verify-ca" => ClientCert::VerifyCa,
                    other => {
                        return Err(format!(
                            "clientcert={other}: use verify-ca or verify-full"
                        ))
                    }
                };
                if conn != ConnType::HostSsl {
                    return Err(
                        "clientcert can only be set on hostssl lines (a certificate needs TLS)"
                            .into(),
                    );
                }
            }
            Some(("clientname", "CN")) => {}
            Some(("clientname", other)) => {
                return Err(format!(
                    "clientname={other}: the router matches the certificate's common name only (clientname=CN)"
                ))
            }
            _ => {
                return Err(format!(
                    "option `{option}`: the router supports clientcert=verify-ca|verify-full and clientname=CN"
                ))
            }
        }
    }
    Ok(Some(HbaRule {
        conn,
        databases,
        users,
        address,
        method,
        clientcert,
    }))
}

/// Every line, errors naming the line number.
pub fn parse(lines: &[String]) -> Result<Vec<HbaRule>, String> {
    let mut rules = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        match parse_line(line) {
            Ok(Some(rule)) => rules.push(rule),
            Ok(None) => {}
            Err(e) => return Err(format!("line {}: {e}", i + 1)),
        }
    }
    Ok(rules)
}

fn in_network(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    let widen = |a: IpAddr| -> (u128, bool) {
        match a {
            IpAddr::V4(v4) => ((u32::from(v4) as u128) << 96, true),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ((u32::from(v4) as u128) << 96, true),
                None => (u128::from(v6), false),
            },
        }
    };
    let (ip, ip_v4) = widen(ip);
    let (net, net_v4) = widen(network);
    if ip_v4 != net_v4 {
        return false;
    }
    // IPv4 addresses sit in the top 32 bits, so one prefix length counts for both.
    let mask = match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p)),
    };
    (ip & mask) == (net & mask)
}

fn names_match(names: &Names, value: &str, user: &str) -> bool {
    match names {
        Names::All => true,
        Names::List { same_user, names } => {
            (*same_user && value == user) || names.iter().any(|n| n == value)
        }
    }
}

impl HbaRule {
    pub fn matches(&self, database: &str, user: &str, ip: IpAddr, tls: bool) -> bool {
        let conn = match self.conn {
            ConnType::Local => false,
            ConnType::Host => true,
            ConnType::HostSsl => tls,
            ConnType::HostNoSsl => !tls,
        };
        let address = match self.address {
            Address::All => true,
            Address::Net { network, prefix } => in_network(ip, network, prefix),
        };
        conn && address
            && names_match(&self.databases, database, user)
            && names_match(&self.users, user, user)
    }
}

/// The method (and certificate check) of the first matching rule.
pub fn rule_for(
    rules: &[HbaRule],
    database: &str,
    user: &str,
    ip: IpAddr,
    tls: bool,
) -> Option<Rule> {
    rules
        .iter()
        .find(|r| r.matches(database, user, ip, tls))
        .map(|r| Rule {
            method: r.method,
            clientcert: r.clientcert,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn method_for(
        rules: &[HbaRule],
        database: &str,
        user: &str,
        ip: IpAddr,
        tls: bool,
    ) -> Option<Method> {
        rule_for(rules, database, user, ip, tls).map(|r| r.method)
    }

    fn rules(lines: &[&str]) -> Vec<HbaRule> {
        parse(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>()).expect("parse")
    }

    #[test]
    fn first_matching_line_decides() {
        let r = rules(&[
            "# comment",
            "local all all trust",
            "host all bad 0.0.0.0/0 reject",
            "hostssl app all 10.0.0.0/8 scram-sha-256",
            "host app,other alice 127.0.0.1 255.255.255.255 md5",
            "host sameuser all 127.0.0.0/8 password  # trailing comment",
            "host all all ::1/128 trust",
            "host all all all scram-sha-256",
        ]);
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let ten: IpAddr = "10.1.2.3".parse().expect("ip");
        let m = |db: &str, user: &str, ip: IpAddr, tls: bool| method_for(&r, db, user, ip, tls);
        assert_eq!(m("x", "bad", lo, false), Some(Method::Reject));
        assert_eq!(m("app", "bob", ten, true), Some(Method::ScramSha256));
        assert_eq!(
            m("app", "bob", ten, false),
            Some(Method::ScramSha256),
            "last line"
        );
        assert_eq!(m("other", "alice", lo, false), Some(Method::Md5));
        assert_eq!(m("carol", "carol", lo, false), Some(Method::Password));
        assert_eq!(
            m("::1", "x", "::1".parse().expect("ip"), false),
            Some(Method::Trust)
        );
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert_eq!(m("carol", "carol", mapped, false), Some(Method::Password));
        let none = rules(&["host app all 127.0.0.1/32 trust"]);
        assert_eq!(method_for(&none, "other", "x", lo, false), None);
    }

    #[test]
    fn unsupported_lines_are_errors_naming_the_line() {
        for (line, needle) in [
            ("host all all 127.0.0.1/32 peer", "peer"),
            ("host all +admins 127.0.0.1/32 md5", "+admins"),
            ("host all all example.com md5", "host names"),
            ("host all all 127.0.0.1/33 md5", "prefix"),
            (
                "host all all 127.0.0.1/32 md5 clientcert=verify-full",
                "hostssl",
            ),
            (
                "hostssl all all 127.0.0.1/32 md5 clientcert=1",
                "clientcert=1",
            ),
            (
                "hostssl all all 127.0.0.1/32 cert clientcert=verify-ca",
                "verify-full",
            ),
            (
                "hostssl all all 127.0.0.1/32 cert clientname=DN",
                "clientname=DN",
            ),
            ("hostssl all all 127.0.0.1/32 md5 map=x", "option `map=x`"),
            ("hots all all 127.0.0.1/32 md5", "hots"),
            ("host all all", "too few"),
            ("host all all 127.0.0.1 255.0.255.0 md5", "mask"),
        ] {
            let e = parse(&["".into(), line.into()]).expect_err(line);
            assert!(
                e.starts_with("line 2: ") && e.contains(needle),
                "{line}: {e}"
            );
        }
    }

    #[test]
    fn cert_method_and_clientcert_option() {
        let r = rules(&[
            "hostssl all admin 127.0.0.1/32 cert",
            "hostssl all alice 127.0.0.1/32 scram-sha-256 clientcert=verify-ca",
            "hostssl all bob 127.0.0.1/32 md5 clientcert=verify-full clientname=CN",
            "host all all 127.0.0.1/32 scram-sha-256",
        ]);
        let lo: IpAddr = "127.0.0.1".parse().expect("ip");
        let rule = |user: &str, tls: bool| rule_for(&r, "db", user, lo, tls).expect("a rule");
        assert_eq!(
            rule("admin", true),
            Rule {
                method: Method::Cert,
                clientcert: ClientCert::VerifyFull
            }
        );
        assert_eq!(rule("alice", true).clientcert, ClientCert::VerifyCa);
        assert_eq!(rule("bob", true).clientcert, ClientCert::VerifyFull);
        assert_eq!(rule("bob", true).method, Method::Md5);
        // Without TLS the hostssl lines do not match.
        assert_eq!(
            rule("admin", false),
            Rule {
                method: Method::ScramSha256,
                clientcert: ClientCert::None
            }
        );
    }
}
