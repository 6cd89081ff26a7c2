use super::*;

#[test]
#[ignore]
fn print_samples() {
    for f in Format::ALL {
        for style in if matches!(f, Format::IstioJson | Format::IstioText) {
            vec![Style::Subset, Style::HostSuffix, Style::Sni]
        } else {
            vec![Style::Subset]
        } {
            let mut cfg = GenConfig::demo(f);
            cfg.attribution = style;
            cfg.lines = 20_000;
            cfg.malformed_rate = 0.0;
            if f == Format::IstioText {
                cfg.tcp_rate = 0.01;
            }
            for v in &mut cfg.services[0].versions {
                v.error_rate = 0.2;
                v.reset_rate = 0.05;
            }
            let (out, _) = generate_vec(&cfg).unwrap();
            let text = String::from_utf8_lossy(&out);
            println!(
                "== {} {:?} avg {} B",
                f.name(),
                style,
                out.len() / cfg.lines
            );
            let interesting = |l: &&str| {
                !l.contains("\" 200 ")
                    && !l.contains(" 200 -")
                    && !l.contains("\"response_code\":200")
                    && !l.contains("\"status\":200,")
            };
            for l in text.lines().filter(interesting).take(8) {
                println!("{l}");
            }
            if f == Format::Nginx {
                for l in text
                    .lines()
                    .filter(|l| l.contains("502, 200") || l.contains("canary"))
                    .take(3)
                {
                    println!("{l}");
                }
            }
        }
    }
}
