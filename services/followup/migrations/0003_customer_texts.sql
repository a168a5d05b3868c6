-- Customer texts in the customer's language: a resolved case keeps the language it speaks (CaseResolved.locale),
-- and a follow-up keeps its text's template and parameters beside the rendered message, so FollowupDue can carry
-- both. Rows from before were written in English from the policy's words: no template.
ALTER TABLE cases ADD COLUMN locale text NOT NULL DEFAULT 'en';
ALTER TABLE followups ADD COLUMN locale text NOT NULL DEFAULT 'en';
ALTER TABLE followups ADD COLUMN template_id text NOT NULL DEFAULT '';
ALTER TABLE followups ADD COLUMN template_params jsonb NOT NULL DEFAULT '{}';
