"""The built-in review task's phrase banks: categories with their items, aspects and words, adjectives, openers
and closers (data only; :mod:`edgerlhf.data.task` builds the rows from them)."""

from __future__ import annotations

from dataclasses import dataclass

POLARITIES = ("negative", "mixed", "neutral", "positive")


# ----------------------------------------------------------------------------------------------
# Phrase banks
# ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Category:
    name: str            # row["category"]
    a_noun: str          # "a restaurant"
    plural: str          # "restaurants"
    ref: str             # how the item is named in text; {name} is the item
    prep: str            # "The service AT Blue Lantern"
    tense: str           # "past" or "present": "The service was" / "The plot is"
    verb: str            # "I ate at X"
    verbing: str         # "I regret eating at X"
    names: tuple         # (first words, second words); items are "first second"
    aspects: tuple       # (noun, is_plural)
    pos: tuple           # category-specific positive clauses
    neg: tuple           # category-specific negative clauses
    pos_close: tuple     # category-specific positive closing sentences
    neg_close: tuple     # category-specific negative closing sentences


CATEGORY_BANKS = (
    Category(
        "restaurant", "a restaurant", "restaurants", "{name}", "at", "past", "ate at", "eating at",
        (("Blue", "Copper", "Olive", "Saffron", "Juniper", "Cedar", "Marlow", "Quince", "Harbor", "Amber",
          "Little", "Willow", "Tamarind", "Indigo", "Fennel", "Basil"),
         ("Lantern", "Table", "Kitchen", "Fork", "Hearth", "Grill", "Bistro", "Oven", "Plate", "Tavern")),
        (("service", False), ("food", False), ("desserts", True), ("prices", True), ("portions", True),
         ("wine list", False), ("atmosphere", False), ("staff", True)),
        ("the pasta was fresh, rich and perfectly seasoned", "our server was friendly and attentive all evening",
         "every dish arrived hot and beautifully plated", "the lamb was tender and absolutely delicious",
         "the chef sent out a lovely little dessert on the house"),
        ("the food arrived cold and the waiter was rude about it", "the waiter forgot half our order and never "
                                                                   "apologized",
         "the soup tasted awful and the bread was stale", "the bill was shockingly high for such tiny, boring plates",
         "the fish smelled bad and we had to send it back"),
        ("I will happily be back for the tasting menu.", "Book a table, you will not regret it.",
         "Easily the best meal I have had this year."),
        ("Honestly, one of the worst meals I have had.", "A waste of a night out.", "We left hungry and annoyed."),
    ),
    Category(
        "cafe", "a café", "cafés", "{name}", "at", "past", "stopped by", "stopping by",
        (("Moss", "Pebble", "Corner", "Driftwood", "Larch", "Tin", "Clover", "Sparrow", "Maple", "Fig",
          "Linen", "Acorn"),
         ("Café", "Coffee", "Roasters", "Bakehouse", "Coffee Bar", "Espresso", "Beanery")),
        (("coffee", False), ("pastries", True), ("seating", False), ("music", False), ("prices", True),
         ("baristas", True), ("croissants", True), ("tea selection", False)),
        ("the flat white was smooth and perfectly balanced", "the almond croissant was flaky, warm and delicious",
         "the baristas were friendly and remembered my order", "it is a cozy, pleasant spot to read for an hour"),
        ("my latte was lukewarm and tasted awful", "the muffins were dry, stale and frankly bad",
         "the music was so loud it was annoying to even talk", "every table was dirty and nobody wiped them"),
        ("It is my new favorite morning spot.", "Go early and enjoy the window seat.",
         "Great coffee, great people."),
        ("Disappointing, I will make my coffee at home instead.", "Not worth the line, sadly.", "A waste of five "
                                                                                                "dollars."),
    ),
    Category(
        "hotel", "a hotel", "hotels", "the {name}", "at", "past", "stayed at", "staying at",
        (("Linden", "Alder", "Marigold", "Eastgate", "Riverside", "Kestrel", "Stonebridge", "Bayside",
          "Westmoor", "Larkfield", "Halcyon", "Ashgrove"),
         ("Hotel", "Inn", "Lodge", "Suites", "House", "Resort")),
        (("rooms", True), ("beds", True), ("front desk", False), ("breakfast", False), ("pool", False),
         ("location", False), ("showers", True), ("bar", False)),
        ("the room was spotless and the bed was wonderfully comfortable",
         "the staff upgraded us to a suite with a beautiful view", "breakfast had fresh fruit and excellent coffee",
         "it was quiet and peaceful enough to sleep in every day"),
        ("the room smelled of smoke and the sheets were dirty", "the air conditioning rattled all night and we barely "
                                                                "slept, which was awful",
         "the front desk lost our booking and was rude about it", "there was no hot water for two days, which was "
                                                                  "ridiculous"),
        ("I would happily stay there again.", "Ask for a room on the top floor, the view is lovely.",
         "A perfect base for a weekend."),
        ("Book somewhere else, this place is a mess.", "I checked out a day early, annoyed.", "Never again, what a "
                                                                                              "disappointment."),
    ),
    Category(
        "museum", "a museum", "museums", "the {name}", "at", "past", "visited", "visiting",
        (("Hallstrom", "Varden", "Calder", "Norwick", "Peregrine", "Ashby", "Thornton", "Merriam", "Kessler",
          "Dunmore"),
         ("Museum of History", "Gallery", "Museum of Science", "Art Museum", "Maritime Museum",
          "Museum of Design", "Folk Museum")),
        (("exhibits", True), ("audio guide", False), ("layout", False), ("lighting", False),
         ("cafeteria", False), ("signage", False), ("staff", True), ("ticket price", False)),
        ("the fossil hall alone is a wonderful reason to go", "the curators clearly love what they do",
         "my kids were happy and fascinated for three hours straight", "the new photography wing is stunning"),
        ("half the galleries were closed without notice, which was frustrating",
         "the labels were tiny and the signs were confusing and useless", "it was so crowded we could barely see "
                                                                          "anything, a real mess",
         "the interactive displays were all broken"),
        ("Plan a whole day, you will enjoy every room.", "A must for anyone who loves history.",
         "We will gladly be back."),
        ("Not worth the ticket, sadly.", "We left after forty bored minutes.", "A sad, dusty waste of an afternoon."),
    ),
    Category(
        "film", "a film", "films", "{name}", "of", "present", "watched", "watching",
        (("Midnight", "Silver", "Northern", "Paper", "Hollow", "Glass", "Winter", "Crimson", "Distant", "Salt",
          "Iron", "Last"),
         ("Harbor", "Road", "Orchard", "Signal", "Tide", "Frontier", "Letters", "Empire", "Station", "Current",
          "Season")),
        (("plot", False), ("acting", False), ("soundtrack", False), ("ending", False), ("pacing", False),
         ("dialogue", False), ("cinematography", False), ("script", False)),
        ("the lead gives a beautiful, understated performance", "the final act had the whole theater cheering",
         "every frame looks like a gorgeous painting", "the script is sharp, funny and surprisingly moving"),
        ("the twist is obvious and boring from the first ten minutes",
         "I was bored and checked my watch more than once",
         "the dialogue is clumsy and the jokes are painfully weak", "the ending is a lazy mess"),
        ("I would happily watch it again.", "See it on the biggest screen you can, it is a joy.",
         "One of the best films this year."),
        ("Two wasted hours I will never get back.", "A sad waste of time.", "Skip it, seriously, it is awful."),
    ),
    Category(
        "tv series", "a series", "series", "{name}", "of", "present", "binged", "watching",
        (("The Lowell", "The Marsh", "The Hartley", "The Varga", "The Okafor", "The Lindqvist", "The Castellan",
          "The Brennan", "The Moreau", "The Sato"),
         ("Inheritance", "Line", "Years", "Case", "House", "Files", "Estate")),
        (("writing", False), ("cast", False), ("first season", False), ("pacing", False), ("finale", False),
         ("characters", True), ("episodes", True), ("theme song", False)),
        ("the second season is even better than the first", "the cast has wonderful chemistry",
         "every episode ends on a clever hook I could not resist", "it is smart, warm and often very funny"),
        ("the writing gets lazy and stupid by episode four", "every episode is boring filler",
         "the finale is a lazy mess that undoes everything before it", "half the characters are just annoying"),
        ("I finished it in a weekend and loved it.", "Worth every minute, truly.", "I cannot wait for the next season, "
                                                                                   "it is great."),
        ("I gave up, bored, after the third episode.", "A waste of your evenings.", "Skip it, it is a mess."),
    ),
    Category(
        "book", "a book", "books", "{name}", "of", "present", "read", "reading",
        (("The Salt", "The Paper", "The Ninth", "The Hollow", "The Amber", "The Winter", "The Glass",
          "The Copper", "The Far", "The Harbor"),
         ("Atlas", "Orchard", "Cartographer", "Archive", "Meridian", "Lighthouse", "Almanac", "Ferryman",
          "Estuary")),
        (("plot", False), ("prose", False), ("characters", True), ("ending", False), ("pacing", False),
         ("dialogue", False), ("middle chapters", True), ("world-building", False)),
        ("the prose is lyrical and beautiful", "I stayed up until three because I loved it so much",
         "the characters feel like real friends", "the last chapter is perfect"),
        ("the middle hundred pages are a boring slog", "the characters are flat, dull and forgettable",
         "the ending is rushed and disappointing", "finishing it was a painful chore"),
        ("I have already lent it to two friends who loved it.", "A book I will happily reread.", "Highly recommended."),
        ("I would not recommend it to anyone.", "It went straight to the donation pile, unloved.",
         "A dull, forgettable read."),
    ),
    Category(
        "album", "an album", "albums", "{name}", "on", "present", "listened to", "listening to",
        (("Neon", "Static", "Velvet", "Northern", "Paper", "Echo", "Lantern", "Satellite", "Copper", "Midnight",
          "Pale"),
         ("Hours", "Weather", "Cities", "Signals", "Rivers", "Motel", "Parade", "Lights", "Tapes")),
        (("vocals", True), ("production", False), ("lyrics", True), ("opening track", False), ("mix", False),
         ("second half", False), ("guitar work", False), ("drums", True)),
        ("the closing track is beautiful every single time", "the harmonies are gorgeous",
         "every song is catchy and fun", "the production is warm, rich and full of detail"),
        ("every song sounds the same and gets boring fast", "the vocals are buried under muddy, ugly production",
         "the lyrics are lazy and full of clichés", "I skipped half the tracks because they were so dull"),
        ("It has been on repeat all week, I love it.", "An easy album to love.", "Their best record yet."),
        ("I will not be listening again, sadly.", "A dull, forgettable record.", "What a disappointment."),
    ),
    Category(
        "video game", "a game", "games", "{name}", "in", "present", "played", "playing",
        (("Star", "Hollow", "Rune", "Iron", "Echo", "Shard", "Void", "Ember", "Neon", "Frost", "Titan"),
         ("Frontier", "Protocol", "Descent", "Drift", "Legacy", "Tactics", "Raiders", "Circuit", "Odyssey")),
        (("controls", True), ("gameplay", False), ("story", False), ("level design", False), ("graphics", True),
         ("load times", True), ("soundtrack", False), ("puzzles", True)),
        ("the gameplay feels tight and incredibly satisfying", "I happily lost whole weekends to it",
         "the open world is gorgeous and full of secrets", "the puzzles are clever and fun"),
        ("it crashed three times in the first hour, which is ridiculous", "the controls are clunky and frustrating",
         "the story is a boring collection of fetch quests", "it is full of bugs and annoying paywalls"),
        ("Easily worth full price.", "I cannot wait for the sequel, it is that good.", "A new favorite."),
        ("Wait for a deep discount, or just skip this mess.", "I asked for a refund, annoyed.", "Not worth the money, "
                                                                                                "what a mess."),
    ),
    Category(
        "app", "an app", "apps", "the {name} app", "in", "present", "tried", "trying",
        (("Tide", "Fern", "Quill", "Loop", "Nest", "Pixel", "Mint", "Orbit", "Cobalt", "Lumen", "Pebble",
          "Birch"),
         ("ly", "box", "well", "io", "hub", "kit", "pad", "flow", "stack")),
        (("interface", False), ("notifications", True), ("syncing", False), ("subscription price", False),
         ("onboarding", False), ("search", False), ("dark mode", False), ("widgets", True)),
        ("it has made my mornings calmer and much more organized", "syncing between my phone and laptop is flawless",
         "the design is clean and genuinely pleasant to use", "support was helpful and answered within an hour"),
        ("it drains my battery and keeps crashing, which is infuriating", "it nags me to upgrade every five minutes, "
                                                                          "which is so annoying",
         "half the features are locked behind an expensive subscription, which is frustrating", "it lost a week of my "
                                                                                                "notes"),
        ("I use it every day now and love it.", "Worth paying for, it is great.", "Highly recommended."),
        ("I uninstalled it, frustrated.", "Find another app, this one is a mess.", "Not worth the download, sadly."),
    ),
    Category(
        "product", "a product", "products", "the {name}", "of", "present", "bought", "buying",
        (("Vantor", "Kelso", "Arlo", "Nimbus", "Orla", "Tessel", "Quorra", "Halden", "Pico", "Strand"),
         ("K3 kettle", "S2 blender", "X2 phone", "V8 vacuum", "L1 lamp", "F4 air fryer",
          "T5 toaster", "Go speaker")),
        (("build quality", False), ("design", False), ("price", False), ("instructions", True),
         ("packaging", False), ("warranty", False), ("battery", False), ("buttons", True)),
        ("it does exactly what it promises and looks great doing it", "it feels sturdy, solid and well made",
         "setup took two minutes and it has worked perfectly since", "it is quiet, fast and easy to clean"),
        ("it broke after two weeks of light use", "the plastic feels cheap and already cracked, which is ridiculous",
         "it stopped working the day after the warranty ended", "support ignored three emails and was useless"),
        ("I would happily buy it again.", "Worth every penny, I love it.", "I have already recommended it to friends."),
        ("I returned it, disappointed.", "Keep your money, it is a waste.", "Avoid it, it is cheap junk that broke."),
    ),
)

CATEGORIES = tuple(c.name for c in CATEGORY_BANKS)

PADJ = ("excellent", "wonderful", "superb", "fantastic", "outstanding", "lovely", "delightful", "impressive",
         "brilliant", "great")
NADJ = ("awful", "terrible", "dreadful", "disappointing", "poor", "boring", "ugly", "miserable", "lousy",
         "bad", "frustrating", "dull")

# Adjective phrases used inside openers ("The plot of X is <adj> and").
OPEN_NEG = ("a letdown", "disappointing", "a mess", "weak", "a problem", "frustrating", "sloppy", "awful",
             "bland", "a chore")
OPEN_POS = ("a delight", "wonderful", "excellent", "a highlight", "superb", "a surprise",
             "lovely", "great")

# Continuation clauses (lower-case, no final punctuation). {a}: an aspect other than the opener's,
# {be}: its verb. Clauses must read after "and", "but", ":", "so", "because" and at a sentence start.
GEN_POS = (
    "the {a} {be} {padj} from start to finish",
    "the {a} {be} {padj}, which made the whole experience",
    "the {a} {be} {padj} and everything felt effortless",
    "the {a} {be} genuinely {padj}",
    "I left happy and impressed",
    "it was worth every penny and I loved it",
    "it quickly became a favorite of mine",
    "the whole thing felt polished and thoughtful",
    "the {a} {be} {padj}, and I enjoyed every minute",
)
GEN_NEG = (
    "the {a} {be} {nadj} from start to finish",
    "the {a} {be} {nadj}, which ruined the whole experience",
    "the {a} {be} {nadj} and nobody seemed bothered",
    "the {a} {be} frankly {nadj}",
    "I left disappointed and a little annoyed",
    "it was a waste of time and money",
    "I regret spending money on it",
    "the whole thing felt lazy and rushed",
    "the {a} {be} {nadj}, and I was bored the whole time",
)
# Milder, less one-sided clauses so the demonstrations' sentiment is not all at the extremes.
MILD_POS = (
    "the {a} {be} fine and mostly did the job",
    "the {a} {be} better than I expected",
    "it was a nice enough way to spend an afternoon",
)
MILD_NEG = (
    "the {a} {be} forgettable and a bit tired",
    "the {a} {be} a little disappointing",
    "it was a bit of a letdown, sadly",
)
GEN_POS_CLOSE = ("Highly recommended.", "I loved it.", "A real treat.", "I am glad I gave it a chance.")
GEN_NEG_CLOSE = ("Not recommended.", "What a waste.", "Skip it, it is bad.", "A real disappointment.")
TURN_JOIN_AFTER_BUT = ("Still, ", "That said, ", "Even so, ")

# Openers: (template, polarity, lean). lean is where the opener points: +1 positive, -1 negative,
# 0 neither. Slots: {Ref}/{ref} item, {a} aspect, {be}, {is_} ("was"/"is" for the item),
# {prep}, {a_noun}, {plural}, {verb}, {verbing}, {nopen}/{popen} opener adjectives.
OPENERS = (
    ("The {a} {prep} {ref} {be} {nopen} and", "negative", -1),
    ("The {a} {prep} {ref} {be} {nopen}, and", "negative", -1),
    ("{Ref} {is_} a real disappointment:", "negative", -1),
    ("I regret {verbing} {ref}:", "negative", -1),
    ("Everything about {ref} felt cheap, and", "negative", -1),
    ("{Ref} is {a_noun} I cannot recommend:", "negative", -1),
    ("Do not believe the hype around {ref}:", "negative", -1),
    ("My problems with {ref} started early:", "negative", -1),
    ("{Ref} let me down:", "negative", -1),
    ("I {verb} {ref} and regret it:", "negative", -1),
    ("{Ref} is a hidden gem:", "positive", 1),
    ("The {a} {prep} {ref} {be} {popen}, and", "positive", 1),
    ("I loved {verbing} {ref}:", "positive", 1),
    ("{Ref} exceeded my expectations:", "positive", 1),
    ("{Ref} is {a_noun} I keep recommending, because", "positive", 1),
    ("Few {plural} impress me like {ref} did:", "positive", 1),
    ("I {verb} {ref} last weekend, and", "neutral", 0),
    ("A friend recommended {ref}:", "neutral", 0),
    ("Everyone talks about {ref}, and", "neutral", 0),
    ("I {verb} {ref} on a whim, and", "neutral", 0),
    ("Here is my honest take on {ref}:", "neutral", 0),
    ("The {a} {prep} {ref} {be} as expected, and", "neutral", 0),
    ("I had mixed expectations for {ref}, and", "neutral", 0),
    ("I expected little from {ref}, but", "mixed", 1),
    ("The {a} {prep} {ref} {be} {nopen}, but", "mixed", 1),
    ("{Ref} got off to a rough start, but", "mixed", 1),
    ("I almost gave up on {ref}, but", "mixed", 1),
    ("The {a} {prep} {ref} {be} {popen}, but", "mixed", -1),
    ("I wanted to love {ref}, but", "mixed", -1),
    ("{Ref} has its moments, but", "mixed", -1),
    ("On paper {ref} should be great, but", "mixed", -1),
    ("I really wanted to like {ref}, but", "mixed", -1),
)
OPENERS_BY_POLARITY = {p: tuple(o for o in OPENERS if o[1] == p) for p in POLARITIES}
