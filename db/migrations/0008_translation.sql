-- Machine translation: a cache of what providers answered, and terms no provider may translate.
-- The cache is keyed by the text as sent, glossary placeholders included, so a glossary change
-- simply misses the cache instead of serving a translation made without the new term.
CREATE TABLE translation_cache (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         text NOT NULL,
    -- 'auto' when the provider detected the source language.
    source_lang      text NOT NULL,
    target_lang      text NOT NULL,
    text_hash        text NOT NULL CHECK (text_hash ~ '^[0-9a-f]{64}$'),
    source_text      text NOT NULL,
    translated_text  text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (provider, source_lang, target_lang, text_hash)
);

CREATE TABLE glossary_terms (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    term        text NOT NULL UNIQUE CHECK (term ~ '^\S(.*\S)?$'),
    note        text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
