"""The tables behind :mod:`models.triage.complaints`: red flags, synonyms, SNOMED CT chief complaints, UK spellings.

Every target phrase is NHAMCS reason-for-visit (RFV) wording, the only complaint text the triage model was
trained on (``training/data/nhamcs.py`` joins the NCHS labels of RFV1-RFV3); a test fits the encoder on
NHAMCS 2018-2019 and checks that every word of every target is in its vocabulary. The levels and sources
of the red flags are discussed in ``docs/clinical_safety.md`` (section "Complaints").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class RedFlag:
    """A complaint that is time-critical whatever the vital signs, and the acuity floor it sets.

    Attributes
    ----------
    id : str
        Stable identifier, e.g. ``"cardiac_arrest"``.
    label : str
        What a clinician reads, e.g. ``"Cardiac or respiratory arrest"``.
    floor_level : int
        The least urgent acuity level a recommendation may carry (1 immediate, 2 very urgent).
    canonical_text : str
        The phrase in the model's training vocabulary (NHAMCS RFV wording) that represents it.
    source : str
        Where the level comes from.
    """

    id: str
    label: str
    floor_level: int
    canonical_text: str
    source: str


_MTS: Final = "Manchester Triage System (Manchester Triage Group, Emergency Triage, 3rd ed., 2014)"

#: The red flags, most urgent first; ``read_complaint`` orders the flags it finds by this table.
RED_FLAGS: Final[dict[str, RedFlag]] = {
    flag.id: flag
    for flag in (
        RedFlag(
            "cardiac_arrest",
            "Cardiac or respiratory arrest",
            1,
            "Cardiac arrest",
            f"{_MTS}: 'airway compromise', 'inadequate breathing' and 'shock' are immediate (red) "
            "discriminators of every chart; Resuscitation Council UK Guidelines 2021",
        ),
        RedFlag(
            "unresponsive",
            "Unresponsive or unconscious",
            1,
            "Unconscious on arrival",
            f"{_MTS}: 'unresponsive' is an immediate (red) discriminator; ACVPU U scores 3 in NEWS2 "
            "(Royal College of Physicians 2017)",
        ),
        RedFlag(
            "status_epilepticus",
            "Currently fitting (status epilepticus)",
            1,
            "Unconscious on arrival; Convulsions",
            f"{_MTS} 'Fits' chart: 'currently fitting' is immediate (red); NICE NG217 Epilepsies (2022): "
            "a convulsive seizure lasting 5 minutes or longer is status epilepticus",
        ),
        RedFlag(
            "anaphylaxis",
            "Anaphylaxis",
            1,
            "Allergy with labored breathing (dyspnea)",
            "Resuscitation Council UK, Emergency treatment of anaphylaxis (2021): anaphylaxis is by "
            "definition a life-threatening airway, breathing or circulation problem, treated at once with "
            f"IM adrenaline; {_MTS} 'Allergy' chart: 'airway compromise', 'stridor' and 'shock' are "
            "immediate (red)",
        ),
        RedFlag(
            "altered_consciousness",
            "Altered level of consciousness or new confusion",
            2,
            "Altered level of consciousness",
            f"{_MTS}: 'altered conscious level' is a very urgent (orange) discriminator; NEWS2 (RCP 2017) "
            "scores new confusion 3",
        ),
        RedFlag(
            "stroke",
            "Stroke symptoms",
            2,
            "Cerebrovascular disease",
            f"{_MTS}: 'acute neurological deficit' is very urgent (orange); NICE NG128 Stroke and TIA "
            "(2019): suspected acute stroke goes directly to a hyperacute stroke unit (time-critical "
            "thrombolysis and thrombectomy)",
        ),
        RedFlag(
            "seizure",
            "Seizure",
            2,
            "Convulsions",
            f"{_MTS} 'Fits' chart: after a fit the level follows the conscious level ('altered conscious "
            "level' very urgent), which the complaint alone does not give; Vigil assumes very urgent",
        ),
        RedFlag(
            "major_trauma",
            "Major trauma",
            2,
            "Multiple injury",
            f"{_MTS} 'Major trauma' chart: 'significant mechanism of injury' is very urgent (orange); "
            "NICE NG39 Major trauma: assessment and initial management (2016)",
        ),
        RedFlag(
            "spinal_injury",
            "Spinal injury",
            2,
            "Fracture/dislocation of spinal column",
            "NICE NG41 Spinal injury: assessment and initial management (2016): immediate spinal "
            f"immobilisation and assessment; {_MTS}: 'new neurological deficit' is very urgent (orange)",
        ),
        RedFlag(
            "overdose",
            "Overdose",
            2,
            "Overdose, intentional",
            f"{_MTS} 'Overdose and poisoning' chart: 'high lethality' is very urgent (orange); lethality "
            "is unknown at triage, so Vigil assumes it is high",
        ),
        RedFlag(
            "poisoning",
            "Poisoning",
            2,
            "Accidental poisoning",
            f"{_MTS} 'Overdose and poisoning' chart: 'high lethality' is very urgent (orange); lethality "
            "is unknown at triage, so Vigil assumes it is high",
        ),
        RedFlag(
            "sepsis",
            "Suspected sepsis",
            2,
            "Sepsis, septicemia",
            "NICE NG51 Suspected sepsis (2016, updated 2024): high-risk criteria need immediate senior "
            "review and antibiotics within 1 hour; UK Sepsis Trust 'red flag sepsis'",
        ),
        RedFlag(
            "suicidal",
            "Suicidal ideation or self-harm",
            2,
            "Suicide attempt",
            f"{_MTS} 'Self-harm' chart: 'high risk of further self-harm' is very urgent (orange); NICE "
            "NG225 Self-harm (2022): assess risk at first contact; the risk cannot be judged from the "
            "complaint, so Vigil assumes it is high",
        ),
        RedFlag(
            "gi_haemorrhage",
            "Gastrointestinal haemorrhage",
            2,
            "Gastrointestinal bleeding",
            f"{_MTS} 'GI bleeding' chart: 'vomiting blood' is very urgent (orange); NICE CG141 Acute upper "
            "gastrointestinal bleeding (2012)",
        ),
        RedFlag(
            "acs",
            "Chest pain suggesting acute coronary syndrome",
            2,
            "Ischemic chest pain",
            f"{_MTS} 'Chest pain' chart: 'cardiac pain' is very urgent (orange); NICE CG95 Recent-onset "
            "chest pain of suspected cardiac origin (2010, updated 2016): 12-lead ECG and emergency "
            "assessment",
        ),
    )
}

# Target phrases (NHAMCS RFV wording) shared by several synonym groups.
SOB: Final = "Shortness of breath"
DYSPNOEA: Final = "Labored or difficult breathing (dyspnea)"
SYNCOPE: Final = "Fainting (syncope)"
ACCIDENT: Final = "Accident, NOS"
ABDO: Final = "Abdominal pain, cramps, spasms"
UNWELL: Final = "General ill feeling"

#: Synonym groups: (target, red flag id or None, phrases). A red-flag group's target is the flag's
#: canonical text; an empty target means "recognised, carries nothing for the model" (e.g. "fit and well").
#: Phrases are matched whole-word after normalisation (:func:`models.triage.complaints.normalise_words`), so
#: UK spellings, "#" (fracture), hyphens and case need no variants here. Manchester presentational
#: flow-chart names are listed with the other phrases of their group.
SYNONYM_GROUPS: Final[tuple[tuple[str, str | None, tuple[str, ...]], ...]] = (
    # --- red flags -----------------------------------------------------------------------------------
    (
        "",
        "cardiac_arrest",
        (
            "cardiac arrest",
            "respiratory arrest",
            "cardiopulmonary arrest",
            "cardiorespiratory arrest",
            "arrest",
            "peri arrest",
            "periarrest",
            "out of hospital cardiac arrest",
            "ohca",
            "oohca",
            "cpr",
            "cardiopulmonary resuscitation",
            "rosc",
            "vf arrest",
            "pea arrest",
            "asystole",
            "not breathing",
            "no pulse",
            "pulseless",
            "no output",
            "no signs of life",
        ),
    ),
    (
        "",
        "unresponsive",
        (
            "unresponsive",
            "unconscious",
            "unrousable",
            "not responding",
            "non responsive",
            "unresponsive adult",
            "unresponsive child",
            "responds to pain only",
            "responds to pain",
            "gcs 3",
            "no response",
            "nil response",
            "no response to pain",
            "not rousable",
            "unable to rouse",
            "not responsive",
        ),
    ),
    (
        "",
        "status_epilepticus",
        (
            "status epilepticus",
            "fitting",
            "still fitting",
            "currently fitting",
            "ongoing seizure",
            "continuous seizure",
            "continuous seizures",
            "prolonged seizure",
            "seizure ongoing",
            "active seizure",
            "seizing",
            "actively seizing",
            "actively fitting",
        ),
    ),
    (
        "",
        "anaphylaxis",
        (
            "anaphylaxis",
            "anaphylactic",
            "anaphylactic reaction",
            "anaphylactic shock",
            "anaphylactoid reaction",
            "allergy with labored breathing",
        ),
    ),
    (
        "",
        "altered_consciousness",
        (
            "altered level of consciousness",
            "altered conscious level",
            "altered consciousness",
            "reduced level of consciousness",
            "decreased level of consciousness",
            "reduced consciousness",
            "reduced gcs",
            "drop in gcs",
            "aloc",
            "confusion",
            "confused",
            "acute confusion",
            "new confusion",
            "delirium",
            "acutely confused",
            "responds to voice",
            "responds to voice only",
            "not alert",
        ),
    ),
    (
        "",
        "stroke",
        (
            "stroke",
            "stroke symptoms",
            "cva",
            "cerebrovascular accident",
            "cerebrovascular disease",
            "suspected stroke",
            "code stroke",
            "fast positive",
            "facial droop",
            "hemiparesis",
            "hemiplegia",
            "one sided weakness",
            "unilateral weakness",
            "new onset weakness one side",
            "weakness on one side",
            "left sided weakness",
            "right sided weakness",
            "facial weakness",
        ),
    ),
    (
        "",
        "seizure",
        (
            "seizure",
            "seizures",
            "fit",
            "fits",
            "fitted",
            "had a fit",
            "convulsion",
            "convulsions",
            "convulsing",
            "epileptic fit",
            "tonic clonic",
            "post ictal",
            "postictal",
            "first fit",
        ),
    ),
    (
        "",
        "major_trauma",
        (
            "major trauma",
            "trauma call",
            "polytrauma",
            "multiple injuries",
            "multiple trauma",
            "multiple injury",
            "high energy trauma",
            "high speed rtc",
            "stab wound",
            "stabbed",
            "stabbing",
            "gunshot wound",
            "gsw",
            "penetrating injury",
            "penetrating trauma",
        ),
    ),
    (
        "",
        "spinal_injury",
        (
            "c spine injury",
            "cervical spine injury",
            "spinal injury",
            "spine injury",
            "spinal cord injury",
            "neck of spine injury",
            "fracture spine",
            "spinal fracture",
            "fracture c spine",
            "c spine fracture",
            "cervical spine fracture",
            "fracture/dislocation of spinal column",
        ),
    ),
    (
        "",
        "overdose",
        (
            "overdose",
            "od",
            "took an overdose",
            "drug overdose",
            "intentional overdose",
            "paracetamol overdose",
            "tablet overdose",
            "overdose and poisoning",
        ),
    ),
    (
        "",
        "poisoning",
        (
            "poisoning",
            "poisoned",
            "ingestion",
            "toxic ingestion",
            "accidental ingestion",
            "carbon monoxide",
            "chemical ingestion",
        ),
    ),
    (
        "",
        "sepsis",
        (
            "sepsis",
            "septic",
            "suspected sepsis",
            "septic shock",
            "neutropenic sepsis",
            "red flag sepsis",
            "urosepsis",
            "septicemia",
            "blood poisoning",
        ),
    ),
    (
        "",
        "suicidal",
        (
            "suicidal",
            "suicidal ideation",
            "suicidal thoughts",
            "suicide attempt",
            "attempted suicide",
            "suicide",
            "self harm",
            "deliberate self harm",
            "dsh",
            "self harming",
            "cut wrists",
        ),
    ),
    (
        "",
        "gi_haemorrhage",
        (
            "gi bleed",
            "gi bleeding",
            "upper gi bleed",
            "lower gi bleed",
            "gastrointestinal bleed",
            "gastrointestinal bleeding",
            "gastrointestinal hemorrhage",
            "gi hemorrhage",
            "hematemesis",
            "vomiting blood",
            "coffee ground vomit",
            "coffee ground vomiting",
            "pr bleed",
            "pr bleeding",
            "bleeding pr",
            "rectal bleeding",
            "bleeding per rectum",
            "melena",
            "malena",
            "gi bleeding chart",
        ),
    ),
    (
        "",
        "acs",
        (
            "acs",
            "acute coronary syndrome",
            "mi",
            "myocardial infarction",
            "heart attack",
            "stemi",
            "nstemi",
            "cardiac chest pain",
            "central chest pain",
            "crushing chest pain",
            "heavy chest pain",
            "chest pain radiating to arm",
            "chest pain radiating to left arm",
            "chest pain radiating to jaw",
            "ischemic chest pain",
        ),
    ),
    # --- other complaints ----------------------------------------------------------------------------
    (
        SOB,
        None,
        (
            "sob",
            "shortness of breath",
            "short of breath",
            "breathless",
            "breathlessness",
            "soboe",
            "shortness of breath in adults",
            "shortness of breath in children",
            "pe",
            "pulmonary embolism",
            "pulmonary embolus",
            "suspected pe",
        ),
    ),
    (
        DYSPNOEA,
        None,
        (
            "dyspnea",
            "dib",
            "difficulty in breathing",
            "difficulty breathing",
            "breathing difficulty",
            "labored breathing",
            "respiratory distress",
        ),
    ),
    (
        SYNCOPE,
        None,
        (
            "collapse",
            "collapsed",
            "collapsed adult",
            "syncope",
            "syncopal episode",
            "faint",
            "fainted",
            "fainting",
            "blackout",
            "black out",
            "loc",
            "loss of consciousness",
            "tloc",
            "transient loss of consciousness",
            "vasovagal",
        ),
    ),
    (ACCIDENT, None, ("fall", "falls", "fallen", "fell", "mechanical fall", "found on floor", "long lie")),
    (
        "Fracture/dislocation of leg; Hip pain",
        None,
        (
            "nof",
            "fracture nof",
            "nof fracture",
            "fractured nof",
            "neck of femur fracture",
            "fractured neck of femur",
            "fracture neck of femur",
            "hip fracture",
            "fractured hip",
            "fracture hip",
        ),
    ),
    ("Injury of head", None, ("head injury", "hi", "head trauma", "head inj", "hit head", "banged head")),
    ("Chest pain", None, ("chest pain", "cp", "chest pains", "pleuritic chest pain")),
    ("Chest discomfort, pressure, tightness", None, ("chest tightness", "tight chest", "chest pressure")),
    (
        ABDO,
        None,
        (
            "abdo pain",
            "abdominal pain",
            "abdo",
            "tummy pain",
            "stomach ache",
            "stomach pain",
            "abdominal pain in adults",
            "abdominal pain in children",
            "rif pain",
            "lif pain",
            "abdominal cramps",
        ),
    ),
    ("Upper abdominal pain, cramps, spasms", None, ("epigastric pain", "ruq pain", "luq pain", "upper abdo pain")),
    ("Lower abdominal pain, cramps, spasms", None, ("lower abdo pain", "suprapubic pain")),
    (
        "Motor vehicle accident",
        None,
        (
            "rtc",
            "rta",
            "mvc",
            "mva",
            "road traffic collision",
            "road traffic accident",
            "car crash",
            "motor vehicle accident",
            "motorbike accident",
        ),
    ),
    (
        "Phlebitis, thrombophlebitis; Swelling of leg",
        None,
        ("dvt", "deep vein thrombosis", "suspected dvt", "calf swelling", "swollen calf"),
    ),
    ("Urinary tract infection", None, ("uti", "urine infection", "water infection", "urinary tract infection")),
    (
        "Diabetes mellitus",
        None,
        (
            "dka",
            "diabetic ketoacidosis",
            "ketoacidosis",
            "hyperglycemia",
            "high blood sugar",
            "high sugars",
            "diabetes",
            "diabetic",
            "hypoglycemia",
            "hypo",
            "low blood sugar",
            "low sugars",
        ),
    ),
    ("Burn, all degrees", None, ("burn", "burns", "scald", "scalds", "burns and scalds")),
    (
        "Abnormal pulsations and palpitations",
        None,
        (
            "palpitations",
            "palps",
            "racing heart",
            "fast heart rate",
            "heart racing",
            "af",
            "atrial fibrillation",
            "svt",
            "tachycardia",
        ),
    ),
    ("Headache, pain in head", None, ("headache", "headaches", "head ache", "thunderclap headache")),
    ("Migraine headache", None, ("migraine",)),
    ("Back pain, ache, soreness, discomfort", None, ("back pain", "backache", "back ache")),
    ("Low back pain, ache, soreness, discomfort", None, ("lower back pain", "low back pain", "lbp")),
    ("Injury of ankle", None, ("ankle injury", "twisted ankle", "inversion injury", "injured ankle")),
    ("Sprain and strain of ankle", None, ("ankle sprain", "sprained ankle")),
    ("Neck pain, ache, soreness, discomfort", None, ("neck pain",)),
    ("Diarrhea; Vomiting", None, ("d and v", "d or v", "diarrhea and vomiting")),
    ("Nausea; Vomiting", None, ("n and v", "n or v", "nausea and vomiting")),
    ("Fever", None, ("fever", "pyrexia", "pyrexial", "febrile", "high temperature", "temperature", "hot adult")),
    (UNWELL, None, ("unwell", "generally unwell", "unwell adult", "unwell child", "feeling unwell", "worried parent")),
    ("General weakness", None, ("weakness", "generalised weakness", "weak", "off legs", "off feet")),
    ("Vertigo - dizziness", None, ("dizzy", "dizziness", "vertigo", "lightheaded", "light headed")),
    ("Wheezing", None, ("wheeze", "wheezy", "wheezing")),
    ("Asthma", None, ("asthma", "asthma attack", "exacerbation of asthma")),
    ("Uterine and vaginal bleeding", None, ("pv bleed", "pv bleeding", "vaginal bleeding", "pv bleeding chart")),
    ("Nosebleed (epistaxis)", None, ("epistaxis", "nose bleed", "nosebleed")),
    ("Blood in urine (hematuria)", None, ("hematuria", "blood in urine")),
    ("Anemia", None, ("anemia", "low hb", "low hemoglobin")),
    ("Edema", None, ("edema", "swollen legs", "leg swelling", "peripheral edema")),
    ("Cellulitis", None, ("cellulitis",)),
    (
        "Abscess; Infection",
        None,
        ("abscess", "abscesses", "abscesses and local infections", "local infections and abscesses"),
    ),
    ("Laceration/cut", None, ("laceration", "lac", "cut", "wound", "wounds")),
    ("Violence, NOS", None, ("assault", "assaulted", "alleged assault")),
    (
        "Adverse effect of alcohol",
        None,
        ("etoh", "alcohol intoxication", "intoxicated", "drunk", "apparently drunk", "alcohol excess"),
    ),
    ("Behavioral disturbances", None, ("behaving strangely", "bizarre behaviour", "agitated", "agitation")),
    ("General psychiatric or psychological problems", None, ("mental health", "mental illness", "psych")),
    ("Delusions or hallucinations", None, ("psychosis", "psychotic", "hallucinations", "hearing voices")),
    ("Depression", None, ("low mood", "depression", "depressed")),
    ("Anxiety and nervousness", None, ("anxiety", "panic attack", "anxious")),
    ("Skin rash", None, ("rash", "rashes")),
    ("Throat soreness", None, ("sore throat",)),
    ("Earache, pain", None, ("earache", "ear pain", "ear problems")),
    ("Toothache", None, ("toothache", "dental pain", "dental problems")),
    ("Eye pain", None, ("eye pain", "eye problems", "red eye")),
    ("Facial pain", None, ("facial pain", "facial problems")),
    ("Hypertension", None, ("hypertension", "high bp", "raised bp", "high blood pressure")),
    ("Constipation", None, ("constipation", "constipated")),
    ("Retention of urine", None, ("urinary retention", "retention")),
    ("Painful urination", None, ("dysuria",)),
    ("Urinary dysfunctions", None, ("urinary problems",)),
    ("Cough", None, ("cough",)),
    ("Vomiting", None, ("vomiting", "vomit", "vomited", "emesis")),
    ("Nausea", None, ("nausea", "nauseous")),
    ("Diarrhea", None, ("diarrhea",)),
    ("Allergy, NOS", None, ("allergic reaction", "allergy", "angioedema", "urticaria", "hives")),
    ("Insect bite; Animal, human bite", None, ("bites and stings", "bite", "sting", "dog bite")),
    (
        "Foreign body",
        None,
        ("foreign body", "fb", "foreign body ingestion", "swallowed foreign body", "ingested foreign body"),
    ),
    ("Crying, fussy infant", None, ("crying baby", "irritable child")),
    ("Leg pain, ache, soreness, discomfort", None, ("limping child", "leg pain")),
    ("Pain of extremity", None, ("limb problems",)),
    ("Injury of trunk", None, ("torso injury",)),
    ("Venereal disease", None, ("sexually acquired infection", "sti")),
    ("Diagnosed complications of pregnancy", None, ("pregnancy problems",)),
    ("Pain, swelling of testes", None, ("testicular pain",)),
    ("Exposure", None, ("chemical exposure",)),
    ("Cerebrovascular disease", None, ("tia", "transient ischemic attack", "mini stroke")),
    ("Disorders of speech, slurring", None, ("slurred speech", "dysarthria")),
    ("Food poisoning", None, ("food poisoning",)),
    ("Fracture", None, ("fracture", "fractured", "broken bone")),
    ("", None, ("fit and well", "nil else", "nil other")),
)

#: Abbreviations that are also English words: matched only when written in capitals ("HI", not "hi").
CASE_SENSITIVE: Final[frozenset[str]] = frozenset({"hi"})

#: SNOMED CT chief complaints recognised when given as the whole complaint, with the phrase they mean. Each
#: concept id and its meaning was checked in published HL7 FHIR value sets (see docs/clinical_safety.md,
#: "Complaints"); ids that could not be checked are left out.
SNOMED_COMPLAINTS: Final[dict[str, str]] = {
    "29857009": "chest pain",  # Chest pain (finding)
    "267036007": "dyspnea",  # Dyspnea (finding)
    "230145002": "difficulty breathing",  # Difficulty breathing (finding)
    "25064002": "headache",  # Headache (finding)
    "21522001": "abdominal pain",  # Abdominal pain (finding)
    "161891005": "back pain",  # Backache (finding)
    "80313002": "palpitations",  # Palpitations (finding)
    "271594007": "syncope",  # Syncope (disorder)
    "91175000": "seizure",  # Seizure (finding)
    "418107008": "unconscious",  # Unconsciousness (finding)
    "410429000": "cardiac arrest",  # Cardiac arrest (disorder)
    "39579001": "anaphylaxis",  # Anaphylaxis (disorder)
    "286933003": "confusion",  # Confusional state (disorder)
    "6471006": "suicidal thoughts",  # Suicidal thoughts (finding)
    "91302008": "sepsis",  # Sepsis (disorder)
    "230690007": "stroke",  # Cerebrovascular accident (disorder)
    "8765009": "hematemesis",  # Hematemesis (disorder)
    "82271004": "head injury",  # Injury of head (disorder)
    "1912002": "fall",  # Fall (event)
    "62315008": "diarrhea",  # Diarrhea (finding)
    "422400008": "vomiting",  # Vomiting (disorder)
    "422587007": "nausea",  # Nausea (finding)
    "386661006": "fever",  # Fever (finding)
    "49727002": "cough",  # Cough (finding)
    "404640003": "dizziness",  # Dizziness (finding)
    "125666000": "burn",  # Burn (disorder)
    "52684005": "assault",  # Assault (event)
    "419076005": "allergic reaction",  # Allergic reaction (disorder)
    "75478009": "poisoning",  # Poisoning (disorder)
}

#: UK (and other) spellings rewritten word by word to the US spelling of the NHAMCS vocabulary.
SPELLINGS: Final[dict[str, str]] = {
    "dyspnoea": "dyspnea",
    "oedema": "edema",
    "haemorrhage": "hemorrhage",
    "haemorrhagic": "hemorrhagic",
    "diarrhoea": "diarrhea",
    "anaemia": "anemia",
    "anaemic": "anemic",
    "haematemesis": "hematemesis",
    "haematuria": "hematuria",
    "haemoptysis": "hemoptysis",
    "haematoma": "hematoma",
    "melaena": "melena",
    "malaena": "melena",
    "ischaemic": "ischemic",
    "ischaemia": "ischemia",
    "oesophagus": "esophagus",
    "oesophageal": "esophageal",
    "haemorrhoids": "hemorrhoids",
    "septicaemia": "septicemia",
    "hypoglycaemia": "hypoglycemia",
    "hyperglycaemia": "hyperglycemia",
    "hypoglycaemic": "hypoglycemic",
    "apnoea": "apnea",
    "leukaemia": "leukemia",
    "tumour": "tumor",
    "behaviour": "behavior",
    "behavioural": "behavioral",
    "colour": "color",
    "paediatric": "pediatric",
    "orthopaedic": "orthopedic",
    "gynaecological": "gynecological",
    "faecal": "fecal",
    "faeces": "feces",
    "foetal": "fetal",
    "oestrogen": "estrogen",
    "labour": "labor",
    "laboured": "labored",
    "anaesthesia": "anesthesia",
    "paraesthesia": "paresthesia",
    "paraesthesiae": "paresthesia",
    "generalised": "generalized",
    "haemoglobin": "hemoglobin",
    "coeliac": "celiac",
    "hyperventilating": "hyperventilation",
    "vomitting": "vomiting",
}
