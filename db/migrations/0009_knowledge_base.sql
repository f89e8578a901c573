-- Knowledge base: articles, their translations with version history, and the chunks that hybrid
-- search reads (full text per language, plus pgvector embeddings for cross-lingual matches).
CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE kb_articles (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    module               text NOT NULL REFERENCES modules (id),
    source_language      text NOT NULL CHECK (source_language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$'),
    status               text NOT NULL DEFAULT 'draft'
                         CHECK (status IN ('draft', 'in_review', 'published', 'archived')),
    created_from_ticket  bigint REFERENCES tickets (id) ON DELETE SET NULL,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX kb_articles_module ON kb_articles (module);
CREATE INDEX kb_articles_ticket ON kb_articles (created_from_ticket) WHERE created_from_ticket IS NOT NULL;

-- One row per article and language: the current version. The article's source-language row is
-- the source; every other row records which source version it was translated from.
CREATE TABLE kb_translations (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    article_id          bigint NOT NULL REFERENCES kb_articles (id),
    language            text NOT NULL CHECK (language ~ '^[a-z]{2,3}(-[A-Za-z0-9]{2,8})?$'),
    title               text NOT NULL,
    body                text NOT NULL,
    version             integer NOT NULL DEFAULT 1 CHECK (version > 0),
    status              text NOT NULL DEFAULT 'draft'
                        CHECK (status IN ('draft', 'in_review', 'published', 'archived')),
    machine_translated  boolean NOT NULL DEFAULT false,
    -- NULL on the source itself.
    source_version      integer CHECK (source_version > 0),
    -- Kept by triggers: the source has a newer version than the one this was made from.
    outdated            boolean NOT NULL DEFAULT false,
    edited_by           text,
    reviewer_id         text REFERENCES agents (id) ON DELETE SET NULL,
    reviewed_at         timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (article_id, language)
);

-- Every version of every translation, written by a trigger so no writer can skip it.
CREATE TABLE kb_translation_versions (
    translation_id      bigint NOT NULL REFERENCES kb_translations (id),
    version             integer NOT NULL,
    title               text NOT NULL,
    body                text NOT NULL,
    machine_translated  boolean NOT NULL,
    source_version      integer,
    edited_by           text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (translation_id, version)
);

CREATE FUNCTION kb_translation_versions_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'kb_translation_versions is append-only';
END $$;
CREATE TRIGGER kb_translation_versions_no_update BEFORE UPDATE OR DELETE ON kb_translation_versions
    FOR EACH ROW EXECUTE FUNCTION kb_translation_versions_immutable();

-- A translation row must carry a new version number whenever its text changes, so that the
-- history and the outdated flags (both keyed by version) can never miss an edit.
CREATE FUNCTION kb_translations_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    source_lang text;
    current_source integer;
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.title, NEW.body) IS DISTINCT FROM (OLD.title, OLD.body) AND NEW.version <= OLD.version THEN
            RAISE EXCEPTION 'kb_translations: a new title or body needs a new version';
        END IF;
        IF NEW.version < OLD.version THEN
            RAISE EXCEPTION 'kb_translations: versions only go up';
        END IF;
    END IF;
    SELECT source_language INTO source_lang FROM kb_articles WHERE id = NEW.article_id;
    IF NEW.language = source_lang THEN
        NEW.source_version := NULL;
        NEW.outdated := false;
    ELSE
        SELECT version INTO current_source FROM kb_translations
         WHERE article_id = NEW.article_id AND language = source_lang;
        NEW.outdated := current_source IS NOT NULL
                        AND coalesce(NEW.source_version, 0) < current_source;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER kb_translations_before_write BEFORE INSERT OR UPDATE ON kb_translations
    FOR EACH ROW EXECUTE FUNCTION kb_translations_before_write();

CREATE FUNCTION kb_translations_after_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.version <> OLD.version THEN
        INSERT INTO kb_translation_versions
            (translation_id, version, title, body, machine_translated, source_version, edited_by)
        VALUES (NEW.id, NEW.version, NEW.title, NEW.body, NEW.machine_translated, NEW.source_version,
                NEW.edited_by);
        -- A new source version leaves every translation made from an older one outdated.
        IF NEW.language = (SELECT source_language FROM kb_articles WHERE id = NEW.article_id) THEN
            UPDATE kb_translations SET outdated = true
             WHERE article_id = NEW.article_id AND id <> NEW.id AND NOT outdated
               AND coalesce(source_version, 0) < NEW.version;
        END IF;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER kb_translations_after_write AFTER INSERT OR UPDATE ON kb_translations
    FOR EACH ROW EXECUTE FUNCTION kb_translations_after_write();

-- Search units of ~200 tokens. Text is folded and CJK runs are split into bigrams by the app
-- (domain/kb.py) before to_tsvector, so queries must go through the same preparation.
CREATE TABLE kb_chunks (
    translation_id       bigint NOT NULL REFERENCES kb_translations (id) ON DELETE CASCADE,
    chunk_index          integer NOT NULL CHECK (chunk_index >= 0),
    -- The translation version the chunks were cut from: an older embedding run never overwrites.
    translation_version  integer NOT NULL,
    language             text NOT NULL,
    text                 text NOT NULL,
    tsv                  tsvector NOT NULL,
    embedding            vector(384),
    -- Vectors of different models are not comparable; search only compares like with like.
    embedding_model      text,
    created_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (translation_id, chunk_index),
    CHECK ((embedding IS NULL) = (embedding_model IS NULL))
);
CREATE INDEX kb_chunks_tsv ON kb_chunks USING gin (tsv);
CREATE INDEX kb_chunks_embedding ON kb_chunks USING hnsw (embedding vector_cosine_ops);
