//! Token estimate against real BPE counts, and the router's public API end to end.
use std::borrow::Cow;

use tiktoken_rs::{cl100k_base_singleton, o200k_base_singleton};
use tower_llm_router::auto_route::{
    async_policy_fn, difficulty, estimate_tokens, fits, policy_fn, AsyncRoutePolicy, Catalog,
    DefaultRouter, ModelProfile, PromptInfo, Ranking, RemoteWithFallback, RouteFuture, RoutePolicy,
};

const ENGLISH: &str = "The committee met on Tuesday to review the proposal for the new library. \
After a long discussion, most members agreed that the building should be placed near the river, \
where it would be easy to reach by bus and by bicycle. A few people worried about the cost of \
flood protection, and asked the architect to prepare two alternative designs before the next \
meeting. In the meantime, the town will collect comments from residents, schools and local \
businesses. \"We want everyone to feel that this is their library,\" said the chair, who has \
lived in the town for thirty-two years. Questions? Send them to the council's office before \
the end of March.";

const ENGLISH_TECH: &str = "Transformers process sequences with self-attention: every token \
attends to every other token, so the cost grows quadratically with the context length. \
Techniques such as FlashAttention, grouped-query attention and sliding windows reduce memory \
traffic; speculative decoding reduces latency by drafting tokens with a smaller model and \
verifying them in parallel. Benchmarks (MMLU, GSM8K, HumanEval) measure knowledge, arithmetic \
reasoning and programming respectively, although contamination makes comparisons difficult.";

const CODE_RUST: &str = r#"use std::collections::HashMap;

/// Counts words, case-insensitively.
pub fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in text.split_whitespace() {
        let w = word.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
        if w.is_empty() {
            continue;
        }
        *counts.entry(w).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts() {
        let c = super::word_counts("a A b, b; c!");
        assert_eq!(c["a"], 2);
        assert_eq!(c.get("d"), None);
    }
}
"#;

const CODE_PYTHON: &str = r#"import json
from dataclasses import dataclass, field

@dataclass
class Order:
    id: int
    items: list[dict] = field(default_factory=list)

    def total(self) -> float:
        return sum(i["price"] * i.get("qty", 1) for i in self.items)

def load(path: str) -> list[Order]:
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return [Order(o["id"], o.get("items", [])) for o in raw if o.get("id") is not None]

if __name__ == "__main__":
    orders = load("orders.json")
    print(f"{len(orders)} orders, {sum(o.total() for o in orders):.2f} EUR")
"#;

const JSON_DATA: &str = r#"{"model":"auto","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"List 3 primes > 100."}],"max_tokens":256,"temperature":0.2,"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}}]}"#;

const CHINESE: &str = "委员会于星期二开会，审议新图书馆的建设方案。经过长时间的讨论，大多数成员同意\
将大楼建在河边，那里乘公交车和骑自行车都很方便。也有人担心防洪工程的费用，要求建筑师在下次会议前准备两个\
备选设计。与此同时，镇政府将收集居民、学校和当地企业的意见。主席说：“我们希望每个人都觉得这是他们自己的图书馆。”";

const JAPANESE: &str = "委員会は火曜日に集まり、新しい図書館の計画を検討しました。長い議論の末、\
ほとんどのメンバーは、バスや自転車で行きやすい川の近くに建物を建てるべきだということに同意しました。\
洪水対策の費用を心配する人もいて、次の会議までに建築家に二つの代替案を用意するよう求めました。";

const RUSSIAN: &str = "Комитет собрался во вторник, чтобы рассмотреть проект новой библиотеки. \
После долгого обсуждения большинство участников согласились, что здание следует разместить у реки, \
куда легко добраться на автобусе и на велосипеде. Некоторые беспокоились о стоимости защиты от \
наводнений и попросили архитектора подготовить два альтернативных проекта к следующему заседанию.";

const ARABIC: &str = "اجتمعت اللجنة يوم الثلاثاء لمراجعة مقترح المكتبة الجديدة. وبعد نقاش طويل، \
وافق معظم الأعضاء على أن يقام المبنى بالقرب من النهر، حيث يسهل الوصول إليه بالحافلة والدراجة. \
وأبدى بعضهم قلقهم من تكلفة الحماية من الفيضانات، وطلبوا من المهندس المعماري إعداد تصميمين بديلين.";

const KOREAN: &str = "위원회는 화요일에 모여 새 도서관 계획을 검토했습니다. 긴 논의 끝에 대부분의 \
위원들은 버스와 자전거로 쉽게 갈 수 있는 강 근처에 건물을 지어야 한다는 데 동의했습니다.";

const HINDI: &str = "समिति ने नए पुस्तकालय के प्रस्ताव की समीक्षा के लिए मंगलवार को बैठक की। लंबी चर्चा के \
बाद अधिकांश सदस्य इस बात पर सहमत हुए कि इमारत नदी के पास बनाई जानी चाहिए।";

const EMOJI: &str = "Great job team 🎉🎉 the launch went well 🚀👍 see you tomorrow 😀☕️ \
👨‍👩‍👧‍👦 family photo 🏳️‍🌈 🇫🇷🇯🇵 ✨✨✨";

const MIXED: &str = "User: 请把这句话翻译成英文：我明天要去北京出差。\nAssistant: I am going on a \
business trip to Beijing tomorrow.\nUser: Спасибо! And in Arabic? شكرا 🙏";

// Scripts that BPE vocabularies serve poorly: about two tokens or more per letter in
// `cl100k_base`, where the estimate once counted one (Armenian, combining marks) or 5/4
// (Georgian, Ethiopic, Khmer, Myanmar), and fell to half the real count.
const ARMENIAN: &str = "Կոմիտեն երեքշաբթի հավաքվեց նոր գրադարանի առաջարկը քննարկելու համար։ \
Երկար քննարկումից հետո անդամների մեծ մասը համաձայնեց, որ շենքը պետք է կառուցել գետի մոտ։";

const GEORGIAN: &str = "კომიტეტი შეიკრიბა სამშაბათს ახალი ბიბლიოთეკის წინადადების \
განსახილველად. ხანგრძლივი დისკუსიის შემდეგ წევრების უმეტესობა შეთანხმდა, რომ შენობა მდინარესთან უნდა აშენდეს.";

const AMHARIC: &str = "ኮሚቴው ለአዲሱ ቤተ መጻሕፍት የቀረበውን ሀሳብ ለመገምገም ማክሰኞ ተሰብስቧል። \
ከረጅም ውይይት በኋላ አብዛኞቹ አባላት ሕንጻው በወንዙ አጠገብ መገንባት እንዳለበት ተስማምተዋል።";

const KHMER: &str = "គណៈកម្មាធិការបានជួបប្រជុំនៅថ្ងៃអង្គារ ដើម្បីពិនិត្យសំណើសម្រាប់បណ្ណាល័យថ្មី។ \
បន្ទាប់ពីការពិភាក្សាយ៉ាងយូរ សមាជិកភាគច្រើនបានយល់ព្រម។";

const MYANMAR: &str = "ကော်မတီသည် အင်္ဂါနေ့တွင် စာကြည့်တိုက်အသစ်အတွက် အဆိုပြုချက်ကို \
ပြန်လည်သုံးသပ်ရန် တွေ့ဆုံခဲ့သည်။ ကြာရှည်စွာ ဆွေးနွေးပြီးနောက် အဖွဲ့ဝင်အများစုက သဘောတူခဲ့ကြသည်။";

const HEBREW: &str = "הוועדה התכנסה ביום שלישי כדי לדון בהצעה לספרייה החדשה. לאחר דיון ארוך \
רוב החברים הסכימו שהבניין צריך להיות ליד הנהר, במקום שקל להגיע אליו באוטובוס ובאופניים.";

const GREEK: &str = "Η επιτροπή συνεδρίασε την Τρίτη για να εξετάσει την πρόταση για τη νέα \
βιβλιοθήκη. Μετά από μακρά συζήτηση, τα περισσότερα μέλη συμφώνησαν ότι το κτίριο πρέπει να \
βρίσκεται κοντά στο ποτάμι.";

/// Vietnamese in decomposed form (NFD, as macOS file names and some keyboards give it): the
/// accents are combining marks.
const VIETNAMESE_NFD: &str = "U\u{309}y ban \u{111}a\u{303} ho\u{323}p va\u{300}o thu\u{31b}\u{301} Ba \u{111}e\u{302}\u{309} \
xem xe\u{301}t \u{111}e\u{302}\u{300} xua\u{302}\u{301}t ve\u{302}\u{300} thu\u{31b} vie\u{302}\u{323}n mo\u{31b}\u{301}i.";

const MATH: &str = "∀x∈ℝ, ∃y: x²+y²≤1 ⇒ |x|≤1 ∧ ∑ᵢ aᵢ = ∫₀¹ f(t)dt ≈ π/4 ≠ ∞; \
A ⊆ B ⟺ ∀a (a∈A → a∈B), ∇·F = ∂F₁/∂x + ∂F₂/∂y, ‖v‖ ≥ 0.";

const RARE_CJK: &str = "𠀀𠀁𠀂𪚥𩸽𠮷𡈽𠜎𠝹𤭢 𨳒𨳊 𩶘 𠂤 𦣝";

#[test]
fn token_estimate_is_conservative_against_bpe() {
    let cl = cl100k_base_singleton();
    let o2 = o200k_base_singleton();
    let samples: &[(&str, &str, bool)] = &[
        ("english prose", ENGLISH, true),
        ("english technical", ENGLISH_TECH, true),
        ("code rust", CODE_RUST, false),
        ("code python", CODE_PYTHON, false),
        ("json", JSON_DATA, false),
        ("chinese", CHINESE, false),
        ("japanese", JAPANESE, false),
        ("russian", RUSSIAN, false),
        ("arabic", ARABIC, false),
        ("korean", KOREAN, false),
        ("hindi", HINDI, false),
        ("emoji", EMOJI, false),
        ("mixed", MIXED, false),
        ("armenian", ARMENIAN, false),
        ("georgian", GEORGIAN, false),
        ("amharic", AMHARIC, false),
        ("khmer", KHMER, false),
        ("myanmar", MYANMAR, false),
        ("hebrew", HEBREW, false),
        ("greek", GREEK, false),
        ("vietnamese nfd", VIETNAMESE_NFD, false),
        ("math", MATH, false),
        ("rare cjk", RARE_CJK, false),
    ];
    println!(
        "{:<18} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "sample", "estimate", "cl100k", "o200k", "est/cl", "est/o200k"
    );
    let mut failures = Vec::new();
    for &(name, text, english) in samples {
        let est = estimate_tokens(text) as f64;
        let a = cl.encode_with_special_tokens(text).len() as f64;
        let b = o2.encode_with_special_tokens(text).len() as f64;
        let (ra, rb) = (est / a, est / b);
        println!("{name:<18} {est:>8} {a:>8} {b:>8} {ra:>9.2} {rb:>9.2}");
        let actual = a.max(b);
        if est < actual * 0.95 {
            failures.push(format!("{name}: estimate {est} < 0.95 x {actual}"));
        }
        if english && est > 2.5 * a.min(b) {
            failures.push(format!("{name}: estimate {est} > 2.5 x {}", a.min(b)));
        }
        if est > 3.0 * a {
            failures.push(format!("{name}: estimate {est} > 3 x cl100k {a}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

const MODELS_JSON: &str = r#"{"data": [
  {"id": "openai/gpt-4o-mini", "name": "OpenAI: GPT-4o-mini", "context_length": 128000,
   "architecture": {"modality": "text+image->text", "input_modalities": ["text", "image", "file"],
                    "output_modalities": ["text"], "tokenizer": "GPT"},
   "pricing": {"prompt": "0.00000015", "completion": "0.0000006", "request": "0", "image": "0.000217"},
   "supported_parameters": ["max_tokens", "response_format", "structured_outputs", "tools", "tool_choice"]},
  {"id": "meta-llama/llama-3.1-8b-instruct", "context_length": 16384,
   "architecture": {"input_modalities": ["text"], "output_modalities": ["text"]},
   "pricing": {"prompt": "0.00000002", "completion": "0.00000003"},
   "supported_parameters": ["max_tokens", "temperature"]},
  {"id": "anthropic/claude-sonnet-4", "context_length": 200000,
   "architecture": {"input_modalities": ["image", "text"], "output_modalities": ["text"]},
   "pricing": {"prompt": "0.000003", "completion": "0.000015"},
   "supported_parameters": ["max_tokens", "response_format", "tools", "tool_choice"]}
]}"#;

fn ids(r: &Ranking) -> Vec<&str> {
    r.models.iter().map(|m| &**m).collect()
}

#[test]
fn catalog_from_openrouter_list_routes_by_constraints_and_difficulty() {
    let catalog = Catalog::from_openrouter_models_json(MODELS_JSON.as_bytes()).unwrap();
    let order: Vec<&str> = catalog.by_strength().iter().map(|m| &*m.id).collect();
    assert_eq!(
        order,
        [
            "meta-llama/llama-3.1-8b-instruct",
            "openai/gpt-4o-mini",
            "anthropic/claude-sonnet-4"
        ]
    );
    let router = DefaultRouter::new().strong_share(0.3).cost_weight(0.0);

    let chat = PromptInfo::from_text("hey, thanks for the help earlier!");
    assert_eq!(
        ids(&router.route_catalog(&chat, &catalog)),
        [
            "meta-llama/llama-3.1-8b-instruct",
            "openai/gpt-4o-mini",
            "anthropic/claude-sonnet-4"
        ]
    );

    // Images leave only the vision models; tools too; a JSON schema only gpt-4o-mini (the
    // only one with `structured_outputs`: `response_format` alone is JSON mode).
    let mut picture = chat;
    picture.images = 1;
    assert_eq!(
        ids(&router.route_catalog(&picture, &catalog)),
        ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4"]
    );
    let mut schema = chat;
    schema.wants_json_schema = true;
    assert_eq!(
        ids(&router.route_catalog(&schema, &catalog)),
        ["openai/gpt-4o-mini"]
    );

    // A long prompt does not fit the 16k window.
    let long_text = "All work and no play makes Jack a dull boy. ".repeat(2_000);
    let long = PromptInfo::from_text(&long_text);
    let llama = catalog.get("meta-llama/llama-3.1-8b-instruct").unwrap();
    let why = fits(&long, llama).unwrap_err();
    assert!(why.to_string().contains("16384"), "{why}");
    assert!(
        !ids(&router.route_catalog(&long, &catalog)).contains(&"meta-llama/llama-3.1-8b-instruct")
    );

    // A hard prompt goes to the strongest model, with the others as fallbacks.
    let hard = PromptInfo::from_text(
        "Write a Rust function `fn lis(v: &[i64]) -> Vec<i64>` that returns the longest strictly \
         increasing subsequence in O(n log n), not just its length. Explain why the patience \
         sorting invariant holds, prove the complexity bound, and list the edge cases (empty \
         input, all equal values, negative numbers) your tests must cover, with at least 3 tests.",
    );
    let r = router.route_catalog(&hard, &catalog);
    assert_eq!(r.first(), Some("anthropic/claude-sonnet-4"), "{}", r.reason);
    assert_eq!(r.models.len(), 3);
    assert!(r.score > 0.7, "{}", r.score);
}

#[test]
fn difficulty_orders_everyday_prompts() {
    let easy = [
        "hi!",
        "Thanks, that's all.",
        "Translate 'good morning' into Spanish.",
        "Write a short poem about autumn leaves.",
    ];
    let hard = [
        "Prove that there are infinitely many primes p such that p = 3 (mod 4). Explain each step.",
        "```python\ndef merge(a, b):\n    return sorted(a + b)\n```\nWhy is this O(n log n) and not O(n)? \
         Rewrite it to run in linear time without using sorted(), and explain the invariant.",
        "A train leaves Paris at 9:40 and travels at 120 km/h; another leaves Lyon, 465 km away, \
         at 10:05 at 150 km/h towards Paris. If neither stops, at what time and how far from Paris \
         do they meet? Show the equation you solve.",
    ];
    assert_all_above(&easy, &hard);
}

/// Every prompt of `high` scores above every prompt of `low`.
fn assert_all_above(low: &[&str], high: &[&str]) {
    let max_low = low
        .iter()
        .map(|t| difficulty(&PromptInfo::from_text(t)))
        .fold(0.0f32, f32::max);
    for t in high {
        let d = difficulty(&PromptInfo::from_text(t));
        assert!(d > max_low, "{d} <= {max_low}: {t}");
    }
}

#[test]
fn task_kind_outweighs_length() {
    // Long requests weak models do well (writing, role play, rewriting, translation)...
    let light = [
        "Draft a friendly email to my landlord asking him to fix the heating before the weekend, \
         mentioning that the radiator in the bedroom has been cold since Monday and that I work \
         from home, so any morning this week would suit me for a visit.",
        "Pretend you are a medieval innkeeper. Greet me as I walk in from the rain, tell me \
         what is on the menu tonight, and complain a little about the new tax on ale.",
        "Rewrite this paragraph so it sounds more formal: we messed up your order, sorry about \
         that, the new one ships tomorrow and you won't pay for shipping.",
        "Translate into German: The meeting has been moved to Thursday afternoon because half \
         of the team is travelling on Wednesday.",
    ];
    // ...score below short code, math and logic tasks.
    let strong = [
        "Implement binary search in Python.",
        "Solve x^2 - 5x + 6 = 0 and prove both roots are integers.",
        "Here is a riddle: what has keys but can't open locks?",
    ];
    let shortest_light = light.iter().map(|t| t.len()).min().unwrap_or(0);
    assert!(strong.iter().all(|t| t.len() < shortest_light));
    assert_all_above(&light, &strong);
}

#[test]
fn closures_are_policies() {
    fn takes_policy(p: impl RoutePolicy) -> Ranking {
        let a = ModelProfile::new("a", 1000, 1.0, 1.0);
        let b = ModelProfile::new("b", 1000, 2.0, 2.0);
        p.route(&PromptInfo::from_text("x"), &[&a, &b])
    }
    let reversed = |_: &PromptInfo<'_>, c: &[&ModelProfile]| {
        Ranking::new(
            c.iter().rev().map(|m| m.id.clone()).collect(),
            1.0,
            Cow::Borrowed("reversed"),
        )
    };
    let r = takes_policy(reversed);
    assert_eq!(ids(&r), ["b", "a"]);
    assert_eq!(r.reason, "reversed");
    let r = takes_policy(DefaultRouter::new().cost_weight(0.0).strong_share(0.0));
    assert_eq!(ids(&r), ["a", "b"]);
}

#[test]
fn closures_need_no_parameter_types_with_policy_fn() {
    let a = ModelProfile::new("a", 1000, 1.0, 1.0);
    let b = ModelProfile::new("b", 1000, 2.0, 2.0);
    let p = PromptInfo::from_text("x");
    let reversed = policy_fn(|prompt, candidates| {
        Ranking::new(
            candidates.iter().rev().map(|m| m.id.clone()).collect(),
            prompt.text.len() as f32,
            Cow::Borrowed("reversed"),
        )
    });
    let r = reversed.route(&p, &[&a, &b]);
    assert_eq!(ids(&r), ["b", "a"]);
    assert_eq!(r.score, 1.0);

    // The async one may borrow the prompt and the candidates in its future.
    let remote = async_policy_fn(|prompt, candidates| {
        Box::pin(async move {
            let last = candidates.last().ok_or("no candidate")?;
            Ok(Ranking::new(
                vec![last.id.clone()],
                0.5,
                Cow::Owned(format!("remote saw {:?}", prompt.text)),
            ))
        })
    });
    let r = futures::executor::block_on(remote.route(&p, &[&a, &b])).unwrap();
    assert_eq!(ids(&r), ["b"]);
    assert_eq!(r.reason, "remote saw \"x\"");
    let err = futures::executor::block_on(remote.route(&p, &[])).unwrap_err();
    assert_eq!(err.to_string(), "no candidate");
    // And it runs behind the layer's fallback like any other.
    let r = futures::executor::block_on(
        RemoteWithFallback::new(remote, reversed, std::time::Duration::from_secs(1))
            .route_or_fallback(&p, &[]),
    );
    assert!(
        r.reason.starts_with("remote policy failed: no candidate"),
        "{}",
        r.reason
    );
}

#[test]
fn an_invalid_price_never_reads_as_free() {
    let small = ModelProfile::new("small", 8000, 0.1, 0.4);
    let large = ModelProfile::new("large", 8000, 3.0, 15.0);
    let router = DefaultRouter::new();
    let easy = PromptInfo::from_text("hi");
    for (input, output) in [
        (-1.0, -1.0),
        (-1.0, 0.0),
        (f64::NAN, 0.1),
        (0.0, f64::INFINITY),
        (f64::NEG_INFINITY, 1.0),
        // Valid prices whose blend overflows.
        (0.0, f64::MAX),
    ] {
        let bad = ModelProfile::new("bad", 8000, input, output);
        assert_eq!(bad.blended_price(), f64::INFINITY, "{input} {output}");
        let c = [&bad, &small, &large];
        let r = router.route(&easy, &c);
        assert_eq!(
            ids(&r),
            ["small", "large", "bad"],
            "{input} {output}: {}",
            r.reason
        );
        let r = router.rank_with_difficulty(1.0, &c);
        assert_eq!(
            ids(&r),
            ["large", "bad", "small"],
            "{input} {output}: {}",
            r.reason
        );
        // With a quality hint its strength stands; the price still counts as the dearest.
        let hinted = bad.clone().with_quality(small.strength());
        let r = router.route(&easy, &[&hinted, &small, &large]);
        assert_eq!(
            ids(&r),
            ["small", "bad", "large"],
            "{input} {output}: {}",
            r.reason
        );
        // Alone, or among others priced as badly, it still ranks.
        let r = router.route(&easy, &[&bad]);
        assert_eq!(ids(&r), ["bad"]);
        let valid = output == f64::MAX;
        assert_eq!(
            ModelProfile::try_new("bad", 8000, input, output).is_ok(),
            valid
        );
        assert_eq!(bad.has_valid_prices(), valid);
    }
    let free = ModelProfile::try_new("free", 8000, 0.0, 0.0).unwrap();
    assert!(free.has_valid_prices());
    assert_eq!(router.route(&easy, &[&small, &free]).first(), Some("free"));
}

/// A remote policy that answers `large` at once, or never.
struct Remote {
    answers: bool,
}

impl AsyncRoutePolicy for Remote {
    fn route<'a>(&'a self, _: &'a PromptInfo<'a>, _: &'a [&'a ModelProfile]) -> RouteFuture<'a> {
        if self.answers {
            Box::pin(async {
                Ok(Ranking::new(
                    vec!["large".into()],
                    0.9,
                    Cow::Borrowed("remote"),
                ))
            })
        } else {
            Box::pin(std::future::pending())
        }
    }
}

#[test]
fn remote_with_fallback_needs_no_timer_for_a_ready_remote_nor_panics_outside_tokio() {
    let small = ModelProfile::new("small", 8000, 0.1, 0.1);
    let large = ModelProfile::new("large", 8000, 5.0, 5.0);
    let c = [&small, &large];
    let p = PromptInfo::from_text("hi");
    let local = |_: &PromptInfo<'_>, _: &[&ModelProfile]| {
        Ranking::new(vec!["small".into()], 0.0, Cow::Borrowed("local"))
    };
    let timeout = std::time::Duration::from_secs(1);
    let ready = RemoteWithFallback::new(Remote { answers: true }, local, timeout);
    let stuck = RemoteWithFallback::new(Remote { answers: false }, local, timeout);

    // Outside any tokio runtime: a ready remote is used, a pending one is not waited for.
    let r = futures::executor::block_on(ready.route_or_fallback(&p, &c));
    assert_eq!(ids(&r), ["large"]);
    assert_eq!(r.reason, "remote");
    let r = futures::executor::block_on(stuck.route_or_fallback(&p, &c));
    assert_eq!(ids(&r), ["small"]);
    assert_eq!(
        r.reason,
        "no tokio runtime to time the remote policy; local: local"
    );

    // A runtime without the time driver: a ready remote arms no timer.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let r = rt.block_on(ready.route_or_fallback(&p, &c));
    assert_eq!(ids(&r), ["large"]);
}

mod properties {
    use proptest::prelude::*;
    use tower_llm_router::auto_route::{difficulty, estimate_tokens, Features, PromptInfo};

    proptest! {
        #[test]
        fn any_text_scores_in_range(text in any::<String>()) {
            let d = difficulty(&PromptInfo::from_text(&text));
            prop_assert!((0.0..=1.0).contains(&d));
            let f = Features::extract(&text);
            prop_assert!((0.0..=1.0).contains(&f.non_latin));
        }

        #[test]
        fn estimate_is_subadditive_and_grows(a in any::<String>(), b in any::<String>()) {
            let (ea, eb) = (estimate_tokens(&a), estimate_tokens(&b));
            let ab = format!("{a}{b}");
            let eab = estimate_tokens(&ab);
            // Joining can merge a run across the seam, but never costs more than both
            // parts plus one token.
            prop_assert!(eab <= ea + eb + 1, "{} > {} + {}", eab, ea, eb);
            prop_assert!(eab + 2 >= ea.max(eb) / 2);
            prop_assert!(eab <= 3 * ab.len() as u64 + 1);
        }
    }
}
