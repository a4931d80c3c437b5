-- SDK configurations stored before SetSdkConfig refused empty object keys
-- (`{"": ...}`, at any depth): Envoy's REST transcoder crashes printing a
-- Struct with one, so every redemption of such an app through the gateway
-- took the gateway down. The keys are dropped; nothing could have read
-- them through the gateway, and a gRPC client gets the same configuration
-- less the unnamed entries.
CREATE FUNCTION sdk_config_without_empty_keys(config jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE STRICT AS $$
BEGIN
    CASE jsonb_typeof(config)
    WHEN 'object' THEN
        RETURN (SELECT coalesce(jsonb_object_agg(key, sdk_config_without_empty_keys(value)), '{}'::jsonb)
                FROM jsonb_each(config) WHERE key <> '');
    WHEN 'array' THEN
        RETURN (SELECT coalesce(jsonb_agg(sdk_config_without_empty_keys(value) ORDER BY position), '[]'::jsonb)
                FROM jsonb_array_elements(config) WITH ORDINALITY AS element(value, position));
    ELSE
        RETURN config;
    END CASE;
END
$$;

UPDATE apps SET sdk_config = sdk_config_without_empty_keys(sdk_config)
WHERE sdk_config <> sdk_config_without_empty_keys(sdk_config);

DROP FUNCTION sdk_config_without_empty_keys(jsonb);
