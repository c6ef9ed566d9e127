-- Change: adds payouts.country_code, the recipient's E.164 country calling
-- code (228 for Togo), which version 2 of PayoutRequested records, and fills
-- it for existing rows from msisdn with the same rule as Msisdn::country_code.
-- Rollback: forward-only. The previous binary does not write the column, so
-- rows it projects keep NULL there; `nepxy-replay rebuild --projection payouts
-- --swap` fills them once the new binary is back.

ALTER TABLE payouts ADD COLUMN country_code integer;

UPDATE payouts
SET country_code = CASE
    WHEN substr(msisdn, 2, 1) IN ('1', '7') THEN substr(msisdn, 2, 1)::integer
    WHEN substr(msisdn, 2, 2) IN (
        '20', '27', '30', '31', '32', '33', '34', '36', '39', '40', '41', '43', '44',
        '45', '46', '47', '48', '49', '51', '52', '53', '54', '55', '56', '57', '58',
        '60', '61', '62', '63', '64', '65', '66', '81', '82', '84', '86', '90', '91',
        '92', '93', '94', '95', '98'
    ) THEN substr(msisdn, 2, 2)::integer
    ELSE substr(msisdn, 2, 3)::integer
END;
