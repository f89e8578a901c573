-- Integration tokens carry scopes (`tickets:read`, `tickets:write`, `directory:write`, ...): each
-- endpoint needs the scope of its area and kind (GET reads, anything else writes). Tokens of the
-- other roles keep an empty list: their role decides.
ALTER TABLE api_tokens ADD COLUMN scopes text[] NOT NULL DEFAULT '{}';

-- Integration tokens made before scopes existed could do everything an integration can; they keep it.
UPDATE api_tokens SET scopes = ARRAY[
    'tickets:read', 'tickets:write', 'directory:read', 'directory:write', 'schedules:read',
    'schedules:write', 'kb:read', 'kb:write', 'quality:read', 'quality:write', 'reports:read'
] WHERE role = 'integration';
