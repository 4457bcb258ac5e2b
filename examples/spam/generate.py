"""Generate the demo spam/ham dataset (deterministic: the same seed gives the same CSVs).

Short messages built from templates with varied wording, names, amounts and links. Some
messages are deliberately hard (ham that talks about prizes or offers, spam written like a
friendly note) and a small share of labels is flipped, so a good model scores well below 100 %.

    python examples/spam/generate.py            # rewrites examples/spam/data/*.csv
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

NAMES = [
    "Anna",
    "Ben",
    "Chloe",
    "Dan",
    "Emma",
    "Farid",
    "Grace",
    "Hugo",
    "Ines",
    "Jack",
    "Kofi",
    "Lena",
    "Marco",
    "Nina",
    "Omar",
    "Priya",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
]
PLACES = [
    "the office",
    "the cafe on Main St",
    "the gym",
    "the library",
    "my place",
    "the station",
    "the park",
    "your mum's",
    "the usual pub",
    "the clinic",
]
DAYS = [
    "today",
    "tomorrow",
    "tonight",
    "on Monday",
    "on Tuesday",
    "this weekend",
    "on Friday",
    "next week",
    "later",
    "after lunch",
]
TIMES = ["7", "7:30", "8", "9am", "noon", "1pm", "3", "5:15", "6pm", "half past six"]
THINGS = [
    "milk",
    "the report",
    "my charger",
    "the keys",
    "bread",
    "the slides",
    "your jacket",
    "the tickets",
    "a birthday card",
    "the invoice",
    "some coffee",
    "the book",
]
PRIZES = [
    "a $1000 gift card",
    "an iPhone 15",
    "a FREE cruise",
    "£500 cash",
    "a brand new car",
    "a $250 Walmart voucher",
    "2 free flights",
    "a luxury watch",
    "€750",
    "a PS5",
]
BRANDS = [
    "Amazon",
    "PayPal",
    "your bank",
    "Netflix",
    "Apple",
    "DHL",
    "Royal Mail",
    "HMRC",
    "Microsoft",
    "the IRS",
]
SHORT = [
    "bit.ly/3xQz9",
    "tinyurl.com/claim-now",
    "win-big.example",
    "secure-verify.example/login",
    "txt.example/stop",
    "deal4u.example",
    "rewards-center.example",
    "acct-check.example",
]
NUMBERS = ["08712 460 324", "87121", "0800 555 0199", "62468", "09061 701 461", "85069"]

HAM = [
    "Hey {name}, are we still on for {day}?",
    "Can you pick up {thing} on your way home?",
    "Running late, be there by {time}.",
    "Meeting moved to {time} {day}, same room.",
    "Thanks for {thing}, you're a star!",
    "I'm at {place}, where are you?",
    "Did you see the game last night? Unbelievable.",
    "Mum says dinner at {time}, don't be late.",
    "Ok see you at {place} {day}.",
    "Can we push our call to {time}? Something came up.",
    "{name} is bringing {thing}, we just need drinks.",
    "Happy birthday {name}! Have a great day.",
    "Just landed, will call you {day}.",
    "Sorry I missed your call, I was at {place}.",
    "Don't forget {thing} for {day}.",
    "lol that's hilarious, tell {name}",
    "Is {thing} still at {place}? I can't find it.",
    "Hope you feel better soon. Let me know if you need anything.",
    "Kids are asleep finally. Movie {day}?",
    "The train is delayed again, ugh. ETA {time}.",
    "Sent you the notes from {day}'s meeting.",
    "Can you review {thing} before {time}?",
    "Good luck with the interview {day}!",
    "We need to talk about the budget {day}.",
    "I left {thing} at {place}, can you grab it?",
]
# Ham that looks like spam: prizes, offers, money, links, urgency, shouting.
HAM_HARD = [
    "I won the office raffle, it's just {prize} lol. Drinks on me {day}!",
    "The shop has a free coffee offer {day}, want to go?",
    "Call me when you get this, it's about {thing}.",
    "URGENT: the client wants {thing} by {time}!!",
    "Did you claim your refund from the travel agent yet?",
    "Free tickets for the concert {day}, {name} can't go. Want them?",
    "Your package from {brand} arrived, I put it by the door.",
    "Congrats on the promotion!!! You deserve it.",
    "Text me the code for the gate, I'm outside.",
    "Winner winner chicken dinner, {name} cooked {day}.",
    "I'll transfer you the £20 for {thing} {day}.",
    "Limited spots left for the yoga class {day}, shall I book two?",
]
SPAM = [
    "Congratulations! You have won {prize}. Claim now at {link}",
    "URGENT! Your {brand} account has been suspended. Verify at {link}",
    "You have been selected for {prize}. Reply YES to claim.",
    "FREE entry to win {prize}! Text WIN to {number}. T&Cs apply.",
    "Final notice: your {brand} payment failed. Update details: {link}",
    "Get a loan of up to $5000 today, no credit check. Apply {link}",
    "Hot singles in your area want to meet you {day}! {link}",
    "Earn $500/day working from home. No experience needed. {link}",
    "Your parcel could not be delivered. Pay the £1.99 fee: {link}",
    "WINNER!! As a valued customer you get {prize}. Call {number} now",
    "Cheap meds, no prescription needed. Order at {link}",
    "Double your bitcoin in 24 hours, guaranteed. Join {link}",
    "You are owed a tax refund from {brand}. Claim within 24h: {link}",
    "Claim your {prize} before midnight! Call {number}",
    "Lowest mortgage rates ever! Reply STOP to opt out. {link}",
    "Your mobile number won {prize} in our weekly draw. Call {number}",
]
# Spam that looks like ham: casual tone, names, no shouting.
SPAM_HARD = [
    "Hi {name}, it's me, I changed my number. Can you send me £200 for {thing}? Will pay back",
    "hey, is this still your number? I found something you'd like {link}",
    "{name} shared a document with you: {link}",
    "Hi, your order {day} is ready, confirm your address here {link}",
    "Thanks for your payment to {brand}. Not you? Call {number}",
    "Mum, I dropped my phone, this is my new number. Can you text me back?",
    "Your appointment {day} at {time} needs confirming: {link}",
    "Quick question about {thing} - reply to this number for details",
]


OPENERS = [
    "",
    "",
    "",
    "Hi, ",
    "Hey! ",
    "Hello, ",
    "Dear customer, ",
    "FYI ",
    "Ok so ",
    "Reminder: ",
]
CLOSERS = [
    "",
    "",
    "",
    " Thanks.",
    " Cheers",
    " - {name}",
    " Reply STOP to end.",
    " See you!",
    " xx",
]


def fill(template: str, rng: random.Random) -> str:
    text = template.format(
        name=rng.choice(NAMES),
        place=rng.choice(PLACES),
        day=rng.choice(DAYS),
        time=rng.choice(TIMES),
        thing=rng.choice(THINGS),
        prize=rng.choice(PRIZES),
        brand=rng.choice(BRANDS),
        link=rng.choice(SHORT),
        number=rng.choice(NUMBERS),
    )
    opener = rng.choice(OPENERS)
    closer = rng.choice(CLOSERS).format(name=rng.choice(NAMES))
    text = opener + (text[0].lower() + text[1:] if opener and text[:2] != "I " else text) + closer
    roll = rng.random()
    if roll < 0.08:
        text = text.lower()
    elif roll < 0.12:
        text = text.upper()
    elif roll < 0.2:
        text = text.rstrip(".!") + rng.choice([" x", " :)", " !!", " thx", " pls"])
    return text


def message(rng: random.Random, hard_share: float) -> tuple[str, str]:
    label = "spam" if rng.random() < 0.3 else "ham"
    hard = rng.random() < hard_share
    if label == "ham":
        templates = HAM_HARD if hard else HAM
    else:
        templates = SPAM_HARD if hard else SPAM
    text = fill(rng.choice(templates), rng)
    if rng.random() < 0.25:  # two sentences of the same kind
        text += " " + fill(rng.choice(HAM if label == "ham" else SPAM), rng)
    return text, label


def generate(
    count: int, seed: int, noise: float, hard_share: float, exclude: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    """``count`` labelled messages; texts in ``exclude`` (the training set) are skipped."""
    rng = random.Random(seed)
    rows = []
    while len(rows) < count:
        text, label = message(rng, hard_share)
        if text in exclude:
            continue
        if rng.random() < noise:
            label = "spam" if label == "ham" else "ham"
        rows.append((text, label))
    return rows


def write(path: Path, rows: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "data")
    parser.add_argument("--train", type=int, default=3000)
    parser.add_argument("--validation", type=int, default=600)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--noise", type=float, default=0.03, help="share of flipped labels")
    parser.add_argument("--hard", type=float, default=0.2, help="share of look-alike messages")
    args = parser.parse_args()
    train = generate(args.train, args.seed, args.noise, args.hard)
    seen = frozenset(text for text, _ in train)
    validation = generate(args.validation, args.seed + 1, args.noise, args.hard, exclude=seen)
    write(args.out / "train.csv", train)
    write(args.out / "validation.csv", validation)
    print(f"wrote {args.train} + {args.validation} rows to {args.out}")


if __name__ == "__main__":
    main()
